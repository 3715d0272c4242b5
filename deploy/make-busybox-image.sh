#!/usr/bin/env bash
# Makes a busybox image offline from Debian's busybox-static and writes it as an OCI archive.
#   deploy/make-busybox-image.sh OUT.tar [NAME]
# Import it with: berth image import OUT.tar
set -euo pipefail
out=$1 name=${2:-busybox:latest}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
umoci init --layout oci >/dev/null
umoci new --image oci:img >/dev/null
umoci unpack --image oci:img bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/etc bundle/rootfs/root bundle/rootfs/tmp
cp /usr/bin/busybox bundle/rootfs/bin/
for a in $(/usr/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "bundle/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > bundle/rootfs/etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' > bundle/rootfs/etc/group
umoci repack --image oci:img bundle >/dev/null
umoci config --image oci:img --config.cmd /bin/sh \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
cd - >/dev/null
skopeo copy -q "oci:$work/oci:img" "oci-archive:$out:$name"
