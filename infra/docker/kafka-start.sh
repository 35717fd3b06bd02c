#!/bin/sh
# The docker-compose broker under TLS, in the apache/kafka image. The `certs` service wrote its
# server.properties (SASL_SSL, TLS controller, ACL authorizer) and the SCRAM users' 0600
# argument file to the security volume; the file is handed to the java launcher as `@file`, so
# no password appears on a command line. Formats once, then runs the broker in the foreground.
set -eu
SECURITY=/etc/traffic/security/kafka
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  cluster_id=$(/opt/kafka/bin/kafka-storage.sh random-uuid)
  /opt/kafka/bin/kafka-storage.sh format --standalone -t "$cluster_id" \
    -c "$SECURITY/server.properties" "@$SECURITY/format.args"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$SECURITY/server.properties"
