# Multi-stage build of the messagebox server; the runtime image holds only the binary and
# runs as an unprivileged user. The data directory keeps the embedded SQLite database and
# the development key when no MySQL is configured.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin messagebox

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home messagebox
COPY --from=build /src/target/release/messagebox /usr/local/bin/messagebox
USER messagebox
WORKDIR /data
ENV NODE_ENV=production MESSAGEBOX_PORT=8080
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/messagebox"]
CMD ["serve"]
