# Sourced by scripts/setup and scripts/services: where the Kafka broker's
# jars live. scripts/kafka/pom.xml names what is in them; keep the version
# here and there in step.
KAFKA_VERSION=3.7.2
TIERD_CACHE=${TIERD_CACHE:-${HOME:-/tmp}/.cache/tierd}
KAFKA_HOME=$TIERD_CACHE/kafka-$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_HOME/libs
# Written last by scripts/setup; holds the pom's checksum, so editing the
# pom makes setup resolve again.
KAFKA_MARKER=$KAFKA_HOME/.resolved
