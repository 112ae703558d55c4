# A guest's DHCP client for benches/dhcp_window.rs: a DHCPDISCOVER every PERIOD seconds on IFACE for
# DURATION seconds, each waiting up to PERIOD for its DHCPOFFER. Prints one line per request:
# "<send time, Unix seconds> 1" when answered, "<send time> 0" when not.
#
#   python3 dhcp_probe.py IFACE DURATION [PERIOD]
import os
import select
import socket
import struct
import sys
import time

iface, duration = sys.argv[1], float(sys.argv[2])
period = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
mac = bytes.fromhex(open(f"/sys/class/net/{iface}/address").read().strip().replace(":", ""))

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("", 68))


def discover(xid):
    # op, htype, hlen, hops, xid, secs, flags (broadcast reply), ciaddr, yiaddr, siaddr, giaddr
    head = struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, xid, 0, 0x8000, 0, 0, 0, 0)
    return head + mac + b"\0" * 10 + b"\0" * 192 + b"\x63\x82\x53\x63" + bytes([53, 1, 1, 255])


def is_offer(pkt, xid):
    if len(pkt) < 244 or pkt[0] != 2 or struct.unpack("!I", pkt[4:8])[0] != xid:
        return False
    opts = pkt[240:]
    i = 0
    while i + 1 < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1
            continue
        if opts[i] == 53:
            return opts[i + 2] == 2
        i += 2 + opts[i + 1]
    return False


end = time.time() + duration
xid = int.from_bytes(os.urandom(4), "big")
out = []
while time.time() < end:
    xid = (xid + 1) & 0xFFFFFFFF
    sent = time.time()
    try:
        s.sendto(discover(xid), ("255.255.255.255", 67))
    except OSError:
        pass
    answered = False
    deadline = sent + period
    while True:
        left = deadline - time.time()
        if left <= 0:
            break
        r, _, _ = select.select([s], [], [], left)
        if r and is_offer(s.recv(2048), xid):
            answered = True
    # The rest of the period is waited out above: one request per period.
    out.append(f"{sent:.3f} {1 if answered else 0}")
print("\n".join(out))
