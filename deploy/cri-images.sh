#!/usr/bin/env bash
# Builds the stand-ins of the images critest's Image Manager specs and its default busybox
# pull, and pushes them to a local registry (plain HTTP) under the paths of their upstream
# names: berth's registry mirrors then point registry.k8s.io, gcr.io and docker.io at it
# (shared/CRI.md says why upstream images cannot be used here).
#   deploy/cri-images.sh REGISTRY          e.g. deploy/cri-images.sh 127.0.0.1:5000
# Needs umoci, skopeo, procps (pgrep) and util-linux (ipcs); Debian's dynamically linked
# busybox is taken from its package (apt-get download, not installed: it conflicts with
# busybox-static), else the host's busybox is used.
#
# REGISTRY/e2e-test-images/busybox:1.29-2     busybox with its applets as hardlinks (a masked
#     /bin/ls must not mask the shell), procps' pgrep and util-linux's ipcs with their
#     libraries, /etc/passwd with root, nobody and www-data
# REGISTRY/k8s-staging-cri-tools/
#     test-image-1:latest, -2, -3                three distinct images (a label each)
#     test-image-tags:1, :2, :3                  one image under three tags
#     test-image-latest:latest, test-image-tag:test, test-image-tag:all
#     test-image-user-uid, -username, -uid-group, -username-group :latest
#                                                USER 1002, www-data, 1003:1004, www-data:1004
#     test-image-predefined-group:latest         default-user (uid 1000) also in group 50000, USER 1000
# REGISTRY/pause:3.6                         the sandbox image: deploy/pause.c (reaps, waits for SIGTERM)
# REGISTRY/e2e-test-images/nginx:1.14-2, k8s-staging-cri-tools/hostnet-nginx-amd64:latest (port
#     12003), e2e-test-images/httpd:2.4.39-4   shell stand-ins serving /www with busybox httpd
# REGISTRY/e2e-test-images/nonewprivs:1.3   deploy/nonewprivs.c, setuid root: prints its effective uid
set -euo pipefail
reg=${1:?usage: $0 REGISTRY (host:port of a plain-HTTP registry)}
work=$(mktemp -d)
deploy=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
trap 'rm -rf "$work"' EXIT

# The busybox binary: Debian's dynamic one when its package can be fetched.
busybox_binary() {
  if (cd "$work" && apt-get download -q busybox >/dev/null 2>&1); then
    dpkg-deb -x "$work"/busybox_*.deb "$work/bb"
    for b in "$work/bb/bin/busybox" "$work/bb/usr/bin/busybox"; do
      [ -x "$b" ] && { echo "$b"; return; }
    done
  fi
  echo "cri-images.sh: Debian's dynamic busybox package is unavailable; using $(command -v busybox) (a static busybox runs ls in the shell: critest's MaskedPaths spec then fails)" >&2
  command -v busybox
}

# copy_with_libs ROOTFS BINARY DEST: the binary and the shared libraries it loads.
copy_with_libs() {
  local root=$1 bin=$2 dest=$3 lib
  install -D -m 0755 "$bin" "$root$dest"
  for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}

# The busybox rootfs and its OCI image in $work/oci:busybox.
make_busybox() {
  local rootfs=$work/bundle/rootfs bb a
  cd "$work"
  umoci init --layout oci >/dev/null
  umoci new --image oci:busybox >/dev/null
  umoci unpack --image oci:busybox bundle >/dev/null
  mkdir -p "$rootfs"/{bin,etc,root,tmp,home,var/run} "$rootfs/usr/bin"
  chmod 1777 "$rootfs/tmp"
  bb=$(busybox_binary)
  copy_with_libs "$rootfs" "$bb" /bin/busybox
  for a in $("$bb" --list); do
    [ "$a" = busybox ] || [ -e "$rootfs/bin/$a" ] || ln "$rootfs/bin/busybox" "$rootfs/bin/$a"
  done
  rm -f "$rootfs/bin/pgrep" "$rootfs/bin/ipcs"
  copy_with_libs "$rootfs" "$(command -v pgrep)" /bin/pgrep
  copy_with_libs "$rootfs" "$(command -v ipcs)" /bin/ipcs
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'www-data:x:33:33:www-data:/var/www:/bin/false' \
    'default-user:x:1000:1000::/home/default-user:/bin/sh' 'nobody:x:65534:65534:nobody:/:/bin/false' \
    > "$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'www-data:x:33:' 'default-user:x:1000:' 'group1:x:50000:default-user' \
    'nogroup:x:65534:' > "$rootfs/etc/group"
  umoci repack --image oci:busybox bundle >/dev/null
  umoci config --image oci:busybox --config.cmd sh \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
}

# variant TAG [umoci config flags…]: a copy of the busybox image with a changed config.
variant() {
  local tag=$1; shift
  umoci config --image "$work/oci:busybox" --tag "$tag" "$@" >/dev/null
}

# push TAG NAME: the image $work/oci:TAG as REGISTRY/NAME.
push() {
  skopeo copy -q --dest-tls-verify=false "oci:$work/oci:$1" "docker://$reg/$2"
}

make_busybox
s=k8s-staging-cri-tools
push busybox e2e-test-images/busybox:1.29-2
for n in 1 2 3; do
  variant "distinct-$n" --config.label "berth.test-image=$n"
  push "distinct-$n" "$s/test-image-$n:latest"
done
variant tags --config.label berth.test-image=tags
for t in 1 2 3; do push tags "$s/test-image-tags:$t"; done
variant latest --config.label berth.test-image=latest
push latest "$s/test-image-latest:latest"
variant tag --config.label berth.test-image=tag
push tag "$s/test-image-tag:test"
push tag "$s/test-image-tag:all"
variant user-uid --config.user 1002
push user-uid "$s/test-image-user-uid:latest"
variant user-username --config.user www-data
push user-username "$s/test-image-user-username:latest"
variant user-uid-group --config.user 1003:1004
push user-uid-group "$s/test-image-user-uid-group:latest"
variant user-username-group --config.user www-data:1004
push user-username-group "$s/test-image-user-username-group:latest"
variant predefined-group --config.user 1000
push predefined-group "$s/test-image-predefined-group:latest"
# The sandbox (pause) image berth's CRI runs for every pod ([cri] sandbox_image's default):
# deploy/pause.c built static (it reaps orphans and exits 0 on SIGTERM), alone in its image;
# without a C compiler, a busybox shell that waits for a signal stands in (it reaps nothing).
make_pause() {
  if command -v gcc >/dev/null && gcc -static -Os -o "$work/pause" "$deploy/pause.c" 2>/dev/null; then
    (cd "$work" && umoci new --image oci:pause >/dev/null &&
      umoci unpack --image oci:pause pause-bundle >/dev/null &&
      install -m 0755 "$work/pause" pause-bundle/rootfs/pause &&
      umoci repack --image oci:pause pause-bundle >/dev/null &&
      umoci config --image oci:pause --config.entrypoint /pause >/dev/null)
  else
    echo "cri-images.sh: no static C compiler; the pause image is a shell that reaps nothing" >&2
    variant pause --clear=config.cmd --config.entrypoint sh --config.entrypoint -c \
      --config.entrypoint 'trap "exit 0" TERM INT; while :; do sleep 2147483647 & wait $!; done'
  fi
}
make_pause
push pause pause:3.6

# derived TAG SCRIPT-PATH SCRIPT [umoci config flags…]: the busybox image with an executable
# script added at SCRIPT-PATH, under TAG.
derived() {
  local tag=$1 path=$2 script=$3; shift 3
  (cd "$work" && rm -rf "d-$tag" && umoci unpack --image oci:busybox "d-$tag" >/dev/null &&
    mkdir -p "d-$tag/rootfs$(dirname "$path")" "d-$tag/rootfs/www" &&
    printf '%s\n' "$script" > "d-$tag/rootfs$path" && chmod 0755 "d-$tag/rootfs$path" &&
    echo ok > "d-$tag/rootfs/www/index.html" &&
    umoci repack --image "oci:$tag" "d-$tag" >/dev/null)
  umoci config --image "$work/oci:$tag" "$@" >/dev/null
}

# nginx stand-ins: a shell script named nginx (so the process is called nginx) that writes
# /var/run/nginx.pid and serves /www with busybox httpd on $PORT (80; 12003 for hostnet).
nginx_script='#!/bin/sh
echo $$ > /var/run/nginx.pid
httpd -f -p "${PORT:-80}" -h /www &
trap "kill $! 2>/dev/null; exit 0" TERM INT
wait'
derived nginx /usr/sbin/nginx "$nginx_script" --clear=config.cmd \
  --config.entrypoint nginx --config.entrypoint -g --config.entrypoint "daemon off; master process"
push nginx e2e-test-images/nginx:1.14-2
umoci config --image "$work/oci:nginx" --tag hostnet-nginx --config.env PORT=12003 >/dev/null
push hostnet-nginx k8s-staging-cri-tools/hostnet-nginx-amd64:latest
# httpd stand-in: says "httpd -D FOREGROUND" (what critest looks for in its log), serves port 80.
derived httpd /usr/local/bin/httpd-foreground '#!/bin/sh
echo "httpd -D FOREGROUND"
exec httpd -f -p 80 -h /www' --clear=config.cmd --config.cmd httpd-foreground
push httpd e2e-test-images/httpd:2.4.39-4
# nonewprivs stand-in: deploy/nonewprivs.c, setuid root, prints "Effective uid: N" (needs a
# static C compiler; without one the image is left out and its two critest specs fail).
if command -v gcc >/dev/null && gcc -static -Os -o "$work/nnp" "$deploy/nonewprivs.c" 2>/dev/null; then
  (cd "$work" && rm -rf d-nnp && umoci unpack --image oci:busybox d-nnp >/dev/null &&
    install -D -o 0 -g 0 -m 4755 nnp d-nnp/rootfs/usr/local/bin/nnp &&
    umoci repack --image oci:nonewprivs d-nnp >/dev/null)
  umoci config --image "$work/oci:nonewprivs" --clear=config.cmd \
    --config.entrypoint /usr/local/bin/nnp >/dev/null
  push nonewprivs e2e-test-images/nonewprivs:1.3
else
  echo "cri-images.sh: no static C compiler; the nonewprivs image is left out" >&2
fi
echo "pushed the CRI test images to $reg"
