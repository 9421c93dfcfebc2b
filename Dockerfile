# Builds every ordermesh service into one slim image; docker-compose picks the binary per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/inventory-manager /src/target/release/cart-manager \
     /src/target/release/checkout-manager /src/target/release/payment-gateway /src/target/release/api-gateway \
     /src/target/release/ordermesh /usr/local/bin/
USER 65534:65534
CMD ["ordermesh"]
