#!/bin/sh
# One docker-compose broker (node $1) under TLS, in the apache/kafka image. The `certs` service
# wrote each node's server.properties (SASL_SSL, TLS controller, ACL authorizer, the quorum of
# all nodes) and its 0600 format argument file (the cluster id, the controllers, the SCRAM
# users) to the security volume; the file is handed to the java launcher as `@file`, so no
# password appears on a command line. Formats once, then runs the broker in the foreground.
set -eu
NODE="${1:?usage: kafka-start.sh NODE_ID}"
SECURITY="/etc/traffic/security/kafka/node-$NODE"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format -c "$SECURITY/server.properties" "@$SECURITY/format.args"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$SECURITY/server.properties"
