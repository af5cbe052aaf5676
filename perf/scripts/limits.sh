# Sourced by server.sh and fleet.sh. A load generator is one client on loopback: the
# per-client limits (rates per IP and per identity, connections per IP and in total, live
# sends per socket) are lifted unless set in the environment, so a benchmark measures the
# server, not its refusals. The limiters still run and count (their maxima are only high).
# BENCH_LIMITS=default keeps the defaults.
if [ "${BENCH_LIMITS:-lifted}" != default ]; then
  export MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX="${MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX:-1000000}"
  export MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX="${MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX:-1000000}"
  export MESSAGE_BOX_MAX_CONNECTIONS="${MESSAGE_BOX_MAX_CONNECTIONS:--1}"
  export MESSAGE_BOX_MAX_CONNECTIONS_PER_IP="${MESSAGE_BOX_MAX_CONNECTIONS_PER_IP:--1}"
  export MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS="${MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS:--1}"
  export MESSAGE_BOX_WEBSOCKET_SEND_RATE_LIMIT="${MESSAGE_BOX_WEBSOCKET_SEND_RATE_LIMIT:--1}"
  export MESSAGE_BOX_MAX_CONCURRENT_REQUESTS="${MESSAGE_BOX_MAX_CONCURRENT_REQUESTS:-1000}"
fi
# No delivery payments: a benchmark never contacts the public wallet storage (the default
# WALLET_STORAGE_URL); the benchmarked boxes are free.
export WALLET_STORAGE_URL="${WALLET_STORAGE_URL:-none}"
