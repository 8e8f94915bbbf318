package tierd.bench;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * What tierd's drain is compared with: a Kafka Streams application that
 * does only the dedupe and the monthly sums of the orders topic, with
 * exactly_once_v2 and RocksDB stores (their changelogs in Kafka), and
 * nothing else (no scores, tiers, reviews or events).
 *
 * <p>Per order: decode (Apache Avro, generic records), skip an order id
 * already seen for its customer, add qty, amount and one order to the
 * customer's month (UTC). The clock starts when the application starts and
 * stops when its group has committed the end offset of every partition, as
 * tierd's drain stops when Redis holds every partition's end offset.
 *
 * <p>args: bootstrap topic order.avsc state-dir application-id threads
 * end-offset... (one per partition). Prints "seconds N" and "orders N".
 */
public final class StreamsBaseline {
  static final AtomicLong counted = new AtomicLong();

  static final class DedupeAndSum implements Processor<String, byte[], Void, Void> {
    private final GenericDatumReader<GenericRecord> reader;
    private BinaryDecoder decoder;
    private GenericRecord rec;
    private KeyValueStore<String, Integer> seen;
    private KeyValueStore<String, byte[]> sums;

    DedupeAndSum(Schema schema) {
      reader = new GenericDatumReader<>(schema);
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
      seen = context.getStateStore("seen");
      sums = context.getStateStore("sums");
    }

    @Override
    public void process(Record<String, byte[]> r) {
      try {
        decoder = DecoderFactory.get().binaryDecoder(r.value(), decoder);
        rec = reader.read(rec, decoder);
      } catch (Exception e) {
        return; // a bad record: tierd dead-letters it; the bench sends none
      }
      String customer = rec.get("customer_id").toString();
      String orderKey = customer + '\u0000' + rec.get("order_id");
      ZonedDateTime at =
          Instant.ofEpochMilli((Long) rec.get("placed_at")).atZone(ZoneOffset.UTC);
      int month = at.getYear() * 100 + at.getMonthValue();
      if (seen.get(orderKey) != null) return;
      seen.put(orderKey, month);
      long qty = 0, amount = 0;
      int sign = "SALE".equals(rec.get("kind").toString()) ? 1 : -1;
      for (Object o : (List<?>) rec.get("lines")) {
        GenericRecord l = (GenericRecord) o;
        long q = (Long) l.get("quantity");
        qty += q;
        amount += q * (Long) l.get("unit_price");
      }
      String monthKey = customer + '\u0000' + month;
      byte[] old = sums.get(monthKey);
      ByteBuffer b = ByteBuffer.allocate(24);
      if (old != null) {
        ByteBuffer o = ByteBuffer.wrap(old);
        b.putLong(o.getLong() + sign * qty).putLong(o.getLong() + sign * amount)
            .putLong(o.getLong() + 1);
      } else {
        b.putLong(sign * qty).putLong(sign * amount).putLong(1);
      }
      sums.put(monthKey, b.array());
      counted.incrementAndGet();
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 7) {
      System.err.println(
          "usage: StreamsBaseline bootstrap topic order.avsc state-dir application-id threads"
              + " end-offset...");
      System.exit(2);
    }
    String bootstrap = args[0], topic = args[1];
    Schema schema = new Schema.Parser().parse(new File(args[2]));
    Map<TopicPartition, Long> ends = new HashMap<>();
    for (int i = 6; i < args.length; i++)
      ends.put(new TopicPartition(topic, i - 6), Long.parseLong(args[i]));

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, args[4]);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.STATE_DIR_CONFIG, args[3]);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[5]));
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    StreamsBuilder b = new StreamsBuilder();
    b.addStateStore(Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore("seen"), Serdes.String(), Serdes.Integer()));
    b.addStateStore(Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore("sums"), Serdes.String(), Serdes.ByteArray()));
    b.stream(topic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
        .process(() -> new DedupeAndSum(schema), "seen", "sums");

    Properties ap = new Properties();
    ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(ap);
        KafkaStreams streams = new KafkaStreams(b.build(), p)) {
      long t0 = System.nanoTime();
      streams.start();
      for (;;) {
        Thread.sleep(50);
        if (streams.state() == KafkaStreams.State.ERROR
            || streams.state() == KafkaStreams.State.NOT_RUNNING) {
          System.err.println("streams stopped: " + streams.state());
          System.exit(1);
        }
        Map<TopicPartition, OffsetAndMetadata> got =
            admin.listConsumerGroupOffsets(args[4]).partitionsToOffsetAndMetadata().get();
        boolean done = true;
        for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
          OffsetAndMetadata o = got.get(e.getKey());
          done &= o != null && o.offset() >= e.getValue();
        }
        if (done) break;
      }
      double s = (System.nanoTime() - t0) / 1e9;
      System.out.printf("seconds %.3f%norders %d%n", s, counted.get());
      System.out.flush();
    }
  }
}
