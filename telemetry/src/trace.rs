//! One trace per order: W3C trace context (`traceparent`) started or continued at the gateway, carried in
//! every message envelope and in gRPC metadata, continued by each consumer and server; spans exported over
//! OTLP only when an endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! Without an endpoint spans still get ids (so log lines carry `trace_id`), and nothing leaves the process.

use std::collections::HashMap;

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and envelope field) carrying a span's context.
pub const TRACEPARENT: &str = "traceparent";

/// Builds the tracer provider: exporting to `endpoint` over OTLP/gRPC when given, else ids only.
pub fn provider(service: &str, endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder().with_service_name(service.to_owned()).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let builder = match endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            builder.with_batch_exporter(exporter)
        }
        None => builder,
    };
    Ok(builder.build())
}

/// The layer that gives `tracing` spans OpenTelemetry ids (and exports them through `provider`).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("ordermesh"))
}

/// The current span's context as a `traceparent` value, if it has one (it has none when no tracing layer
/// is installed, as in tests that do not ask for it).
pub fn traceparent() -> Option<String> {
    let cx = Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the context in `traceparent` (a new trace when there is none or it does not
/// parse), and records its `trace_id` field for the log lines inside it.
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if let Some(value) = traceparent {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    let id = span.context().span().span_context().trace_id();
    if id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_context_goes_out_as_traceparent_and_comes_back_as_the_same_trace() {
        let provider = provider("test", None).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(traceparent(), None, "no span, no context");
            let outer = tracing::info_span!("outer", trace_id = tracing::field::Empty);
            continue_trace(&outer, None);
            let sent = outer.in_scope(traceparent).expect("a span has a context");
            assert!(sent.starts_with("00-") && sent.len() == 55, "{sent}");

            let inner = tracing::info_span!("inner", trace_id = tracing::field::Empty);
            continue_trace(&inner, Some(&sent));
            let got = inner.in_scope(traceparent).unwrap();
            assert_eq!(got[3..35], sent[3..35], "the same trace id");
            assert_ne!(got[36..52], sent[36..52], "a span of its own");

            let fresh = tracing::info_span!("fresh", trace_id = tracing::field::Empty);
            continue_trace(&fresh, Some("garbage"));
            assert_ne!(fresh.in_scope(traceparent).unwrap()[3..35], sent[3..35], "a bad header starts a new trace");
        });
    }
}
