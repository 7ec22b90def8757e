#!/bin/sh
# PID 1 of bench/net.sh's baseline guest: a QEMU microvm booting the project's kernel with the
# host's root over virtio-9p (read-only) and one virtio-net-device on a tap. Configures eth0 as
# 192.168.77.2/24 and runs iperf3 against 192.168.77.1 for SECONDS (argv 1), guest to host and
# then host to guest (-R); net.sh reads the two "receiver" lines. Then it exits.
t=${1:-5}
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp   # iperf3 keeps its buffers in a file under /tmp
ip link set lo up
ip addr add 192.168.77.2/24 dev eth0
ip link set eth0 up
iperf3 -c 192.168.77.1 -t "$t" -f m
iperf3 -c 192.168.77.1 -t "$t" -f m -R
# Exiting panics the kernel; panic=-1 reboot=t with -no-reboot ends QEMU.
