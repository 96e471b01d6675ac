#!/bin/bash
# One run: the code before this branch (68df78f, `cairn dev` in its own process, driven with --addr)
# and after (the bench's own child cluster), same bench binary, same workloads, back to back.
KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 43)
PORT=$((20000 + RANDOM % 20000))
/tmp/cairn-before dev --base-port $PORT --root-key "$KEY" --max-file-size 8MiB --log-level error > /tmp/before-dev.log 2>&1 &
DEV=$!
for i in $(seq 1 120); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && curl -sf http://127.0.0.1:$((PORT+2))/readyz >/dev/null && break; sleep 0.5; done
echo "=== BEFORE (commit 68df78f, cairn dev pid $DEV) ==="
/tmp/dp-cairn bench --addr 127.0.0.1:$PORT,127.0.0.1:$((PORT+1)),127.0.0.1:$((PORT+2)) --key "$KEY" --duration ${D:-5s} --warmup 1s --ceilings=false ${W:+--workloads $W}
kill $DEV; wait $DEV
echo "=== AFTER (this branch) ==="
/tmp/dp-cairn bench --duration ${D:-5s} --warmup 1s ${W:+--workloads $W} ${PROF:+--cpuprofile $PROF}
