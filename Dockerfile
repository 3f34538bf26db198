# One image with both binaries; docker-compose.yml picks the command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/producer /src/target/release/consumer /usr/local/bin/
COPY config /etc/shardflow
ENV SHARDFLOW_CONFIG=/etc/shardflow/compose.toml
WORKDIR /data
