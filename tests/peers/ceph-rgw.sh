#!/bin/bash
# A single-node Ceph for the S3 tests: one monitor, one memstore OSD and
# radosgw's beast frontend, all on 127.0.0.1, no cephx, and an S3 user.
#   ceph-rgw.sh DIR MON_PORT RGW_PORT MSGR_PORT_MIN WATCH_PID [OSD_BYTES]
# Prints READY when the gateway answers. The daemons are stopped when
# WATCH_PID (the test process) exits, so a failed test run leaves nothing.
# Pitfalls: OSD class/crush updates at start are off and the OSD is put in
# the crush map by hand; radosgw starts only once the OSD is up.
set -e
B=$1 MON=$2 RGW=$3 MIN=$4 WATCH=$5 OSD_BYTES=${6:-3221225472}
rm -rf "$B"; mkdir -p "$B/data/mon" "$B/data/osd0" "$B/run" "$B/log"
FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$B/ceph.conf" <<CONF
[global]
fsid = $FSID
mon_host = v1:127.0.0.1:$MON
public_network = 127.0.0.0/8
ms_bind_msgr2 = false
ms_bind_port_min = $MIN
ms_bind_port_max = $((MIN + 19))
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
run_dir = $B/run
log_file = $B/log/\$name.log
admin_socket = $B/run/\$name.asok
[mon.a]
mon_data = $B/data/mon
[osd.0]
osd_class_update_on_start = false
osd_crush_update_on_start = false
osd_objectstore = memstore
osd_data = $B/data/osd0
memstore_device_bytes = $OSD_BYTES
osd_memory_target = 1073741824
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$RGW
rgw_dns_name = localhost
log_file = $B/log/rgw.log
CONF
C="-c $B/ceph.conf"
monmaptool --create --clobber --fsid "$FSID" --addv a "v1:127.0.0.1:$MON" "$B/monmap" >/dev/null
ceph-mon $C --mkfs -i a --monmap "$B/monmap"
setsid ceph-mon $C -i a -f > "$B/log/mon.out" 2>&1 < /dev/null &
echo $! > "$B/mon.pid"
OSDUUID=$(cat /proc/sys/kernel/random/uuid)
ceph $C --connect-timeout 60 osd new "$OSDUUID" 0 >/dev/null
ceph $C osd crush add osd.0 1.0 root=default >/dev/null 2>&1
ceph-osd $C -i 0 --mkfs --osd-uuid "$OSDUUID" > "$B/log/osd-mkfs.out" 2>&1
setsid ceph-osd $C -i 0 -f > "$B/log/osd.out" 2>&1 < /dev/null &
echo $! > "$B/osd.pid"
for _ in $(seq 240); do ceph $C osd stat 2>/dev/null | grep -q " 1 up" && break; sleep 0.5; done
setsid radosgw $C -n client.rgw.a -f > "$B/log/rgw.out" 2>&1 < /dev/null &
echo $! > "$B/rgw.pid"
# The reaper: the cluster lives as long as the test process. The pids are
# read now: whoever started us may remove DIR on its way out.
PIDS="$(cat "$B"/*.pid)"
(
    trap '' HUP
    while kill -0 "$WATCH" 2>/dev/null; do sleep 1; done
    kill -9 $PIDS 2>/dev/null
    rm -rf "$B"
) > /dev/null 2>&1 < /dev/null &
for _ in $(seq 240); do
    curl -s -m 2 -o /dev/null "http://127.0.0.1:$RGW/" && break
    sleep 0.5
done
radosgw-admin $C user create --uid=berth-test --display-name=berth-test \
    --access-key=BERTHTESTACCESS --secret-key=berth-test-secret-key-0123 >/dev/null
echo READY
