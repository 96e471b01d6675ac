# cairn agent configuration: `cairn agent --config-file /etc/cairn/cairn.hcl`.
#
# Every key is an agent flag with '_' for '-' (node_id is --node-id); `cairn agent -h` lists them all.
# A flag on the command line wins over its CAIRN_* environment variable, which wins over this file,
# which wins over the built-in default. An unknown key is an error that names it and its line.
# `cairn agent --config-file FILE --print-config` shows the result, with secrets redacted.
#
# Keep secrets out of this file: give the root key as CAIRN_ROOT_KEY from an EnvironmentFile
# readable by root only (deploy/systemd/cairn.service does), so the file can be world-readable.

node_id  = "cairn1"
data_dir = "/var/lib/cairn"

# Bind addresses. Use the machine's private address; advertise_* when the bind address is not the
# one others reach (0.0.0.0, NAT).
http_addr    = "10.0.0.1:8080"
cluster_addr = "10.0.0.1:7000"
gossip_addr  = "10.0.0.1:7946"

# The same list on every node, itself included: the same file works for first boot, restart and
# scale-up.
join             = ["10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"]
bootstrap_expect = 3

# Fixed when the cluster bootstraps.
erasure = "2+1"
zone    = "rack-a"

max_file_size = "8MiB"
min_free      = "256MiB"

# Repair, garbage collection and scrub.
repair_delay    = "10m"
repair_rate     = "64MiB"
gc_interval     = "10m"
gc_grace_period = "1h"
scrub_cycle     = "168h"
scrub_rate      = "32MiB"

# Serve /debug/pprof to keys with MANAGE_CLUSTER (for `cairn debug`).
enable_debug = false

log_level = "info"
log_json  = true
