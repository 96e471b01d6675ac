#!/bin/sh
# Peak RSS growth of each node of a 3-agent cluster (separate processes, 2+1) while one node
# receives a 1 GiB upload, then while a third serves it back (issue 9's memory target: the
# receiving node grows by at most 32 MiB). Usage: rss-1gib.sh [cairn binary]. Output:
# rss-1gib.txt. Writing 5 to /proc/PID/clear_refs resets VmHWM, the kernel's peak RSS.
set -eu
bin=${1:-cairn}
work=$(mktemp -d)
trap 'for p in $pids; do kill $p 2>/dev/null || true; done; rm -rf "$work"' EXIT
cd "$work"
head -c 1073741824 /dev/urandom >big.bin
export CAIRN_ROOT_KEY=$(openssl rand -hex 32)
export CAIRN_JOIN=127.0.0.1:7946,127.0.0.1:7947,127.0.0.1:7948 CAIRN_BOOTSTRAP_EXPECT=3
pids=""
for i in 1 2 3; do
	"$bin" agent --node-id cairn$i --data-dir data/cairn$i --max-file-size 2147483648 \
		--http-addr 127.0.0.1:808$i --cluster-addr 127.0.0.1:700$i --gossip-addr 127.0.0.1:794$((5 + i)) 2>cairn$i.log &
	pids="$pids $!"
done
for i in 1 2 3; do
	until curl -sf 127.0.0.1:808$i/readyz >/dev/null; do sleep 0.2; done
done
hwm() { for p in $pids; do grep VmHWM /proc/$p/status | tr -s ' \t' ' ' | cut -d' ' -f2; done | paste -sd' '; }
reset() { for p in $pids; do echo 5 >/proc/$p/clear_refs; done; }
echo hi >small.txt
curl -sf -o /dev/null -H "Authorization: Bearer $CAIRN_ROOT_KEY" -F name=s -F file=@small.txt http://127.0.0.1:8081/files/v1/
reset
echo "peak RSS kB of cairn1 cairn2 cairn3 before: $(hwm)"
curl -sf -o up.json -H "Authorization: Bearer $CAIRN_ROOT_KEY" -F name=big.bin -F file=@big.bin http://127.0.0.1:8081/files/v1/
echo "after a 1 GiB upload to cairn1: $(hwm)"
tok=$(sed 's/.*"token":"\([^"]*\)".*/\1/' up.json)
reset
echo "before the download: $(hwm)"
curl -sf http://127.0.0.1:8083/files/v1/$tok/file | sha256sum
sha256sum big.bin
echo "after a 1 GiB download from cairn3: $(hwm)"
