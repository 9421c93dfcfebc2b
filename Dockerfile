# Builds every ordermesh service into one slim image; docker-compose picks the binary per service.
# Dependencies are compiled in a layer of their own (cargo-chef), so a change to our code rebuilds our crates only.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --workspace --recipe-path recipe.json
COPY . .
RUN cargo build --release --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/inventory-manager /src/target/release/cart-manager \
     /src/target/release/checkout-manager /src/target/release/payment-gateway /src/target/release/api-gateway \
     /src/target/release/notifier \
     /src/target/release/ordermesh /usr/local/bin/
# Inside a container the listeners must take connections from other containers, not only from loopback.
ENV GATEWAY_LISTEN_ADDR=0.0.0.0:5003 \
    INVENTORY_LISTEN_ADDR=0.0.0.0:50051 \
    CART_METRICS_ADDR=0.0.0.0:9101 \
    CHECKOUT_METRICS_ADDR=0.0.0.0:9102 \
    INVENTORY_METRICS_ADDR=0.0.0.0:9103 \
    PAYMENT_METRICS_ADDR=0.0.0.0:9104 \
    NOTIFIER_METRICS_ADDR=0.0.0.0:9105
USER 65534:65534
EXPOSE 5003 50051 9101 9102 9103 9104 9105
HEALTHCHECK --interval=5s --timeout=4s --retries=12 CMD ["ordermesh", "probe", "http://127.0.0.1:5003/healthz"]
CMD ["ordermesh"]
