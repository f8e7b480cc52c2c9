# Zeek policy for forwarding notices to Airlock.
#
# Load it from local.zeek:   @load /etc/zeek/site/airlock.zeek
#
# Airlock reads notice.log as JSON lines (contrib/airlock-signal-forward.py
# follows the file and posts new lines, signed, to /api/signals/). Only
# notice.log must be JSON; the other logs may stay TSV, but JSON everywhere
# is simplest.
redef LogAscii::use_json = T;
# Epoch timestamps are what the forwarder and Airlock expect in "ts".
redef LogAscii::json_timestamps = JSON::TS_EPOCH;

# Airlock maps "dst"/"id.resp_h" (then "src"/"id.orig_h") to a device's SSH
# or RDP address. Notices without any address cannot be attributed.
#
# Severity: Airlock treats Scan::Port_Scan and Scan::Address_Scan as
# medium, SSL::Invalid_Server_Cert and Weird::Activity as low, and every
# other notice as high. A site script can decide per notice by adding an
# "airlock_severity" field ("low", "medium", "high" or "critical"):
#
# redef record Notice::Info += {
#     airlock_severity: string &log &optional;
# };
#
# hook Notice::policy(n: Notice::Info)
#     {
#     if ( n$note == Modbus::Unauthorized_Write )   # from your OT scripts
#         n$airlock_severity = "critical";
#     }
