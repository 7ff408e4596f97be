# Sourced by the HTTP scripts: start one `apn node` (binary $APN_BIN) on a free loopback
# port with a throwaway data dir, wait for /healthz, and stop it on exit.
# Sets NODE_PID, NODE_URL, NODE_DIR.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
NODE_DIR=$(mktemp -d -t apn-http-XXXXXX)
NODE_PORT=$(free_port)
NODE_URL="http://127.0.0.1:${NODE_PORT}"
"$APN_BIN" node --data-dir "$NODE_DIR" --relay none --no-mdns \
    --listen /ip4/127.0.0.1/tcp/0 --http "127.0.0.1:${NODE_PORT}" \
    >"$NODE_DIR/node.log" 2>&1 &
NODE_PID=$!
trap 'kill "$NODE_PID" 2>/dev/null; wait "$NODE_PID" 2>/dev/null; rm -rf "$NODE_DIR"' EXIT
for _ in $(seq 1 200); do
    curl -fsS "$NODE_URL/healthz" >/dev/null 2>&1 && break
    kill -0 "$NODE_PID" 2>/dev/null || { cat "$NODE_DIR/node.log"; exit 1; }
    sleep 0.1
done
curl -fsS "$NODE_URL/healthz" >/dev/null || { echo "node did not start" >&2; exit 1; }
