# The operator binary with its bundled plugins (built to wasm32-wasip2 by host/build.rs).
# Build context: the repository root.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release -p operator

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/operator /usr/local/bin/operator
VOLUME /var/lib/operator
ENTRYPOINT ["operator"]
