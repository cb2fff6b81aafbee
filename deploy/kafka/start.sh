#!/bin/sh
# One KRaft node (broker + controller): PLAINTEXT on 9092, advertised as $KAFKA_ADVERTISED_HOST (default: kafka).
set -eu
CP="/opt/kafka/libs/*"
DATA=/var/lib/kafka/data
cat > /tmp/server.properties <<PROPS
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED_HOST:-kafka}:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.bootstrap.servers=localhost:9093
log.dirs=$DATA
num.partitions=${KAFKA_NUM_PARTITIONS:-3}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
if [ ! -f "$DATA/meta.properties" ]; then
  java -cp "$CP" kafka.tools.StorageTool format -t "$(java -cp "$CP" kafka.tools.StorageTool random-uuid | tail -1)" \
    -c /tmp/server.properties --standalone
fi
exec java -Xms512m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true -cp "$CP" kafka.Kafka /tmp/server.properties
