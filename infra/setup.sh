#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine; a second run reuses it all.
# System packages (Java, Maven, PostgreSQL, Chromium) come from Debian, Python packages from uv.lock,
# the Kafka broker and HDFS jars from Maven Central (infra/kafka/pom.xml, infra/hdfs/pom.xml).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
BOOTSTRAP=.local/bootstrap

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)  # the dashboard's browser tests drive it
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]} from Debian"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=$(command -v python3.11 || command -v python3)
if [ ! -x "$BOOTSTRAP/bin/uv" ] || [ "$("$BOOTSTRAP/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$python" -m venv "$BOOTSTRAP"
  "$BOOTSTRAP/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
UV_PYTHON_DOWNLOADS=never "$BOOTSTRAP/bin/uv" sync --frozen --quiet --python "$python"

.venv/bin/python -c 'from infra.stack.local import LocalStack; LocalStack.from_env().kafka.ensure_jars()'
.venv/bin/python -c 'from infra.stack.hdfs import HdfsCluster; from traffic_core.settings import LOCAL_STATE_DIR; HdfsCluster.from_env(LOCAL_STATE_DIR).ensure_jars()'
echo "setup: ready (.venv, Kafka jars in .local/kafka/libs, HDFS jars in .local/hdfs/libs)"
