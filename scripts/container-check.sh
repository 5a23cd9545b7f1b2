#!/usr/bin/env bash
# Builds deploy/Containerfile and starts the image on a machine that reaches only the package
# registries (no container registry): what the fleet issue verified, on demand (about 12
# minutes cold on 2 cores; not part of scripts/test.sh).
#
# 1. The base images are made here: Debian 12 by debootstrap from Debian's mirror, imported as
#    localhost/debian:bookworm-slim, and a Rust image from it with this machine's stable
#    toolchain (`rustup`'s) plus gcc/make, standing in for docker.io/library/rust.
# 2. `cargo vendor deploy/vendor` (git-ignored), then `podman build --build-arg OFFLINE=1`:
#    the build stage compiles from the vendored crates with no network.
# 3. The image is started as its own user (uid 10001) in its own filesystem with the models
#    bind-mounted, its HEALTHCHECK command is run, and one real request is answered. Where
#    `podman run` works it is used; in sandboxes whose runtime cannot set rlimits (crun:
#    "setrlimit ... Operation not permitted") the image's root is mounted and run with chroot.
#
# Needs root, apt-get (podman, debootstrap), the models fetched into models/ and ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${FACEGATE_CONTAINER_WORK:-/tmp/facegate-container}"
tag=localhost/facegate:check
port=18098
mkdir -p "$work"

command -v podman >/dev/null && command -v debootstrap >/dev/null \
    || apt-get install -y --no-install-recommends podman debootstrap >/dev/null
if ! podman image exists localhost/debian:bookworm-slim; then
    [ -x "$work/rootfs/bin/sh" ] \
        || debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$work/rootfs" -c . | podman import - localhost/debian:bookworm-slim >/dev/null
fi
if ! podman image exists localhost/facegate-rust:local; then
    toolchain="$(rustc --print sysroot)"
    rm -rf "$work/rustctx" && mkdir -p "$work/rustctx/rust"
    tar -C "$toolchain" -c --exclude=./share/doc --exclude=./lib/rustlib/src . \
        | tar -C "$work/rustctx/rust" -x
    cat > "$work/rustctx/Containerfile" <<'INNER'
FROM localhost/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ make libc6-dev pkg-config ca-certificates && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH
INNER
    podman build --isolation chroot -t localhost/facegate-rust:local "$work/rustctx"
fi
cargo vendor --quiet --locked deploy/vendor >/dev/null
podman build --isolation chroot --format docker -f deploy/Containerfile \
    --build-arg RUST_IMAGE=localhost/facegate-rust:local \
    --build-arg RUNTIME_IMAGE=localhost/debian:bookworm-slim \
    --build-arg OFFLINE=1 -t "$tag" .
podman image inspect "$tag" --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} size={{.Size}}'

health='curl -fsS http://127.0.0.1:8080/health'
if podman run -d --name facegate-check --rm -p "$port:8080" \
    -v "$PWD/models:/opt/facegate/models:ro" "$tag" >/dev/null 2>"$work/run.err"; then
    trap 'podman stop -t 30 facegate-check >/dev/null 2>&1 || true' EXIT
    for _ in $(seq 1 120); do
        podman exec facegate-check sh -c "$health" 2>/dev/null && break
        sleep 1
    done
    podman exec facegate-check sh -c "id && $health"
    curl -fsS --data-binary @../shared/fixtures/faces/image_T1.jpg -H 'Content-Type: image/jpeg' \
        -o "$work/analyze.json" "127.0.0.1:$port/facegate/v1/analyze"
    head -c 200 "$work/analyze.json"
    echo
    exit 0
fi
echo "podman run refused here ($(grep -o 'crun: [^:]*' "$work/run.err" | head -1)); starting the image's root with chroot"
podman rm -f facegate-check >/dev/null 2>&1 || true
mnt="$(podman image mount "$tag")"
trap 'podman image unmount "$tag" >/dev/null 2>&1 || true' EXIT
state="$work/state"
mkdir -p "$state" && chown 10001:10001 "$state"
unshare -m bash -euo pipefail -c "
mount --bind '$PWD/models' '$mnt/opt/facegate/models'
mount --bind '$state' '$mnt/var/lib/facegate'
mount -t proc proc '$mnt/proc'
in_image() { chroot --userspec=10001:10001 '$mnt' sh -c \"\$1\"; }
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin FACEGATE_MODELS_DIR=/opt/facegate/models \
    FACEGATE_BI_DB=/var/lib/facegate/facegate-bi.sqlite FACEGATE_LISTEN=0.0.0.0:8080 RUST_LOG=warn \
    chroot --userspec=10001:10001 '$mnt' sh -c 'cd /var/lib/facegate && exec /usr/local/bin/facegate serve' &
pid=\$!
for _ in \$(seq 1 120); do in_image '$health' >/dev/null 2>&1 && break; sleep 1; done
in_image 'id'
in_image '$health'; echo
curl -fsS --data-binary @../shared/fixtures/faces/image_T1.jpg -H 'Content-Type: image/jpeg' \
    -o '$work/analyze.json' 127.0.0.1:8080/facegate/v1/analyze
head -c 200 '$work/analyze.json'; echo
kill -TERM \$pid; wait \$pid || true
umount '$mnt/proc' '$mnt/var/lib/facegate' '$mnt/opt/facegate/models'
"
