# Multi-stage build of the messagebox server; the runtime image holds only the binary and
# runs as an unprivileged user. /data keeps the embedded SQLite database and the
# development key when no MySQL is configured.
#
#   docker build -t messagebox .
#   docker run -d -p 8080:8080 -v messagebox-data:/data -e SERVER_PRIVATE_KEY=<64 hex> messagebox
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependency-cache layer: build the dependencies against stub sources, so a change to our
# code rebuilds only our crates (the stubs cover every target the manifests name).
COPY Cargo.toml Cargo.lock ./
COPY perf/Cargo.toml perf/Cargo.toml
RUN mkdir -p src benches perf/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/auth.rs && echo 'fn main() {}' > benches/live.rs \
    && echo 'fn main() {}' > perf/src/main.rs \
    && cargo build --release --locked --bin messagebox \
    && rm -rf src benches perf/src target/release/.fingerprint/messagebox-*
COPY . .
RUN cargo build --release --locked --bin messagebox

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home messagebox
COPY --from=build /src/target/release/messagebox /usr/local/bin/messagebox
USER messagebox
WORKDIR /data
VOLUME /data
ENV NODE_ENV=production MESSAGEBOX_PORT=8080
EXPOSE 8080
# `messagebox healthcheck` asks GET /health on MESSAGEBOX_PORT (no curl in the image).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/messagebox", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/messagebox"]
CMD ["serve"]
