# Sourced by scripts/setup and scripts/services (after scripts/kafka/env.sh):
# where the schema registry the registry tests run lives, and the Python
# packages Debian does not ship that the tests import.
#
# Apicurio Registry serves the Confluent schema registry API under
# /apis/ccompat/v7. 3.0.x is the last line that runs on Java 17 (bookworm's).
# Its tar.gz is on Maven Central, but its parent pom is not, so Maven cannot
# resolve it: scripts/setup downloads the one file from Central and checks
# it against the SHA-1 pinned here.
APICURIO_VERSION=3.0.9
APICURIO_SHA1=4deac01752711c32da5662e7b778b61c5e904746
APICURIO_URL=https://repo.maven.apache.org/maven2/io/apicurio/apicurio-registry-app/$APICURIO_VERSION/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz
APICURIO_HOME=$TIERD_CACHE/apicurio-$APICURIO_VERSION
APICURIO_JAR=$APICURIO_HOME/apicurio-registry-app-$APICURIO_VERSION-runner.jar

# fastavro (PyPI; not in Debian) for confluent-kafka's AvroSerializer and
# AvroDeserializer: installed with pip --target here, put on PYTHONPATH by
# the tests that need it.
FASTAVRO_VERSION=1.9.7
TIERD_PYTHONPATH=$TIERD_CACHE/python-fastavro-$FASTAVRO_VERSION
