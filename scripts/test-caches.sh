# Sourced by scripts/run-tests.sh: the package caches of one test run, so that every container of every scenario
# does not download the same .debs and wheels again. Same registries, each file fetched once per run:
#   apt: apt-cacher-ng (Debian's package) on the host, an HTTP proxy the containers reach at their gateway;
#   pip: one download cache directory, mounted into every container.
# molecule/shared/create.yml reads VPSSTACK_APT_PROXY_PORT and VPSSTACK_PIP_CACHE; without them (make demo by
# hand, a user's CI) the containers fetch directly.
test_cache_dir=${VPSSTACK_TEST_CACHE_DIR:-/var/cache/vpsstack-tests}
test_apt_proxy_port=${VPSSTACK_TEST_APT_PROXY_PORT:-3149}

start_test_caches() {
  mkdir -p "$test_cache_dir/apt/cache" "$test_cache_dir/apt/log" "$test_cache_dir/pip"
  if ! dpkg-query -W -f='${Status}' apt-cacher-ng 2>/dev/null | grep -q "install ok installed"; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apt-cacher-ng >/dev/null
  fi
  # Our own instance (config, cache, port): a system apt-cacher-ng may remap mirrors or be absent.
  cat > "$test_cache_dir/apt/acng.conf" <<CONF
CacheDir: $test_cache_dir/apt/cache
LogDir: $test_cache_dir/apt/log
Port: $test_apt_proxy_port
PidFile: $test_cache_dir/apt/pid
ForeGround: 0
CONF
  stop_test_caches
  if /usr/sbin/apt-cacher-ng -c "$test_cache_dir/apt"; then
    export VPSSTACK_APT_PROXY_PORT=$test_apt_proxy_port
  else
    echo "run-tests: apt-cacher-ng did not start; containers fetch packages directly"
  fi
  export VPSSTACK_PIP_CACHE=$test_cache_dir/pip
}

stop_test_caches() {
  local pid_file=$test_cache_dir/apt/pid
  [ -s "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null
  rm -f "$pid_file"
  return 0
}
