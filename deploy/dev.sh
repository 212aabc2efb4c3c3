#!/bin/bash
# deploy/dev.sh - the developer entry point (README quick start).
#
#   deploy/dev.sh run  [ringmta options]  install missing packages, build, run
#                                         the relay in the foreground on the
#                                         embedded default configuration
#                                         (127.0.0.1:2525, spool ./var/spool)
#   deploy/dev.sh test                    same set-up, then every test: unit,
#                                         integration (real daemon, smtplib,
#                                         swaks, smtp-source), the same under
#                                         ASan+UBSan, and each libFuzzer target
#                                         for FUZZ_SECONDS (default 30)
#   deploy/dev.sh build                   set-up and build only
#
# Needs root on a fresh Debian 12 for the package install; later runs only
# install what is missing. Build directories: build/ (the daemon,
# -Werror), build-asan/ (sanitizers), build-fuzz/ (clang, libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PKGS="build-essential pkg-config meson ninja-build git liburing-dev libwolfssl-dev
      libudns-dev liblmdb-dev lmdb-utils python3 python3-pytest swaks postfix
      clang libclang-rt-14-dev iproute2 procps psmisc unbound gnuplot-nox
      dovecot-core dovecot-lmtpd"

say() { printf '==> %s\n' "$*" >&2; }

install_deps() {
	local missing=() p
	for p in $PKGS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		say "missing packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})"
		exit 1
	fi
	say "installing: ${missing[*]}"
	# Postfix is a test peer and benchmark rival here, never the system MTA:
	# install it unconfigured so it does not take port 25.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# unbound is only a test peer (tests run private instances on loopback
	# ports): do not leave the package's system resolver service running.
	case " ${missing[*]} " in *" unbound "*)
		systemctl disable --now unbound >/dev/null 2>&1 || true ;;
	esac
	# Dovecot is the LMTP next hop of the delivery tests (private instances,
	# dovecot -F -c TMPCONF): the system IMAP/POP3/LMTP service stays off.
	case " ${missing[*]} " in *" dovecot-core "*|*" dovecot-lmtpd "*)
		systemctl disable --now dovecot dovecot.socket >/dev/null 2>&1 || true ;;
	esac
}

ensure_user() {
	if [ "$(id -u)" -eq 0 ] && ! getent passwd ringmta >/dev/null; then
		useradd --system --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin ringmta 2>/dev/null || true
	fi
}

build() {
	if [ ! -f build/build.ninja ]; then
		meson setup build -Dwerror=true --buildtype=debugoptimized >/dev/null
	fi
	ninja -C build >/dev/null
}

build_asan() {
	if [ ! -f build-asan/build.ninja ]; then
		meson setup build-asan -Dwerror=true --buildtype=debug \
			-Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	fi
	ninja -C build-asan >/dev/null
}

build_fuzz() {
	if [ ! -f build-fuzz/build.ninja ]; then
		CC=clang meson setup build-fuzz -Dfuzz=true --buildtype=debug >/dev/null
	fi
	ninja -C build-fuzz >/dev/null
}

PASSED=0
FAILED=0
FAILED_NAMES=()
step() {   # step NAME COMMAND... : run one test step, count it
	local name=$1; shift
	say "test: $name"
	if "$@"; then
		PASSED=$((PASSED + 1))
	else
		FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name")
		say "FAILED: $name"
	fi
}

pytest_run() {   # pytest_run BIN : the integration suite against one binary
	local bin=$1
	RINGMTA_BIN="$ROOT/$bin" /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration
}

fuzz_all() {
	local secs=${FUZZ_SECONDS:-30} f name corpus rc=0
	for f in build-fuzz/test/fuzz_*; do
		[ -f "$f" ] && [ -x "$f" ] || continue
		name=${f##*/fuzz_}
		corpus=test/fuzz/corpus/$name
		mkdir -p "build-fuzz/corpus/$name"
		dict=()
		[ -f "test/fuzz/$name.dict" ] && dict=(-dict="test/fuzz/$name.dict")
		say "fuzz: $name for ${secs}s"
		if ! "$f" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=0 \
			"${dict[@]}" -artifact_prefix="build-fuzz/crash-$name-" \
			"build-fuzz/corpus/$name" "$corpus" >"build-fuzz/fuzz-$name.log" 2>&1; then
			say "fuzz target $name failed: see build-fuzz/fuzz-$name.log"
			tail -30 "build-fuzz/fuzz-$name.log" >&2
			rc=1
		fi
	done
	return $rc
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
run)
	install_deps; ensure_user; build
	mkdir -p var
	exec build/ringmta "$@"
	;;
build)
	install_deps; ensure_user; build
	;;
test)
	install_deps; ensure_user
	step "build (-Werror)" build
	step "unit tests" meson test -C build --suite unit --print-errorlogs
	step "integration tests" pytest_run build/ringmta
	if [ "$(id -u)" -eq 0 ]; then
		step "benchmark harness (compare.sh --quick)" \
			bench/compare.sh --quick --systems "ringmta postfix"
		step "relay benchmark harness (relay.sh --quick)" bench/relay.sh --quick
	fi
	step "build (ASan+UBSan)" build_asan
	step "unit tests (ASan+UBSan)" meson test -C build-asan --suite unit --print-errorlogs
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	step "integration tests (ASan+UBSan)" pytest_run build-asan/ringmta
	unset ASAN_OPTIONS UBSAN_OPTIONS
	if command -v clang >/dev/null; then
		step "build (libFuzzer)" build_fuzz
		step "fuzz targets" fuzz_all
	fi
	echo
	[ $FAILED -gt 0 ] && say "failed steps: ${FAILED_NAMES[*]}"
	echo "dev.sh: $PASSED passed, $FAILED failed"
	[ $FAILED -eq 0 ]
	;;
*)
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
