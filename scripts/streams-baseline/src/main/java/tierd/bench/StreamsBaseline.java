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
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
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
 * customer's month (UTC). Two shapes of it:
 *
 * <ul>
 *   <li>{@code processor}: one processor (Processor API) with both stores,
 *       no record cache: the leanest way to write it.
 *   <li>{@code dsl}: the way the DSL's documentation writes it: a dedupe
 *       processor, then the orders re-keyed by customer and month,
 *       grouped (a repartition topic) and aggregated into a materialized
 *       store (record cache on, the DSL's default).
 * </ul>
 *
 * <p>The clock starts when the application starts and stops when its group
 * has committed the end offset of every partition (for {@code dsl}, of its
 * repartition topic's too), as tierd's drain stops when Redis holds every
 * partition's end offset.
 *
 * <p>args: shape bootstrap topic order.avsc state-dir application-id threads
 * end-offset... (one per partition). Prints "seconds N" and "orders N".
 */
public final class StreamsBaseline {
  static final AtomicLong counted = new AtomicLong();
  static final String REPARTITION = "by-month";

  /** An order's sums: month (yyyymm, UTC), signed quantity and amount. */
  static byte[] sumsOf(GenericRecord rec) {
    ZonedDateTime at =
        Instant.ofEpochMilli((Long) rec.get("placed_at")).atZone(ZoneOffset.UTC);
    long qty = 0, amount = 0;
    int sign = "SALE".equals(rec.get("kind").toString()) ? 1 : -1;
    for (Object o : (List<?>) rec.get("lines")) {
      GenericRecord l = (GenericRecord) o;
      long q = (Long) l.get("quantity");
      qty += q;
      amount += q * (Long) l.get("unit_price");
    }
    return ByteBuffer.allocate(20)
        .putInt(at.getYear() * 100 + at.getMonthValue())
        .putLong(sign * qty)
        .putLong(sign * amount)
        .array();
  }

  /** Adds an order's sums (sumsOf) to a month's (qty, amount, orders). */
  static byte[] add(byte[] month, byte[] order) {
    ByteBuffer o = ByteBuffer.wrap(order, 4, 16);
    ByteBuffer b = ByteBuffer.allocate(24);
    if (month != null && month.length == 24) {
      ByteBuffer m = ByteBuffer.wrap(month);
      b.putLong(m.getLong() + o.getLong()).putLong(m.getLong() + o.getLong())
          .putLong(m.getLong() + 1);
    } else {
      b.putLong(o.getLong()).putLong(o.getLong()).putLong(1);
    }
    return b.array();
  }

  /** Decodes an order and drops an order id its customer already had. */
  static final class Dedupe {
    private final GenericDatumReader<GenericRecord> reader;
    private BinaryDecoder decoder;
    private GenericRecord rec;
    private KeyValueStore<String, Integer> seen;

    Dedupe(Schema schema) {
      reader = new GenericDatumReader<>(schema);
    }

    void init(KeyValueStore<String, Integer> store) {
      seen = store;
    }

    /** The order's sums, or null for a duplicate (or a bad record). */
    byte[] first(byte[] value) {
      try {
        decoder = DecoderFactory.get().binaryDecoder(value, decoder);
        rec = reader.read(rec, decoder);
      } catch (Exception e) {
        return null; // a bad record: tierd dead-letters it; the bench sends none
      }
      String orderKey = rec.get("customer_id") + "\u0000" + rec.get("order_id");
      if (seen.get(orderKey) != null) return null;
      byte[] sums = sumsOf(rec);
      seen.put(orderKey, ByteBuffer.wrap(sums).getInt());
      return sums;
    }
  }

  /** The processor shape: dedupe and sum in one processor. */
  static final class DedupeAndSum implements Processor<String, byte[], Void, Void> {
    private final Dedupe dedupe;
    private KeyValueStore<String, byte[]> sums;

    DedupeAndSum(Schema schema) {
      dedupe = new Dedupe(schema);
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
      dedupe.init(context.getStateStore("seen"));
      sums = context.getStateStore("sums");
    }

    @Override
    public void process(Record<String, byte[]> r) {
      byte[] order = dedupe.first(r.value());
      if (order == null) return;
      String monthKey = r.key() + '\u0000' + ByteBuffer.wrap(order).getInt();
      sums.put(monthKey, add(sums.get(monthKey), order));
      counted.incrementAndGet();
    }
  }

  /** The DSL shape's dedupe step: passes on each order's sums once. */
  static final class DedupeStep implements FixedKeyProcessor<String, byte[], byte[]> {
    private final Dedupe dedupe;
    private FixedKeyProcessorContext<String, byte[]> context;

    DedupeStep(Schema schema) {
      dedupe = new Dedupe(schema);
    }

    @Override
    public void init(FixedKeyProcessorContext<String, byte[]> ctx) {
      context = ctx;
      dedupe.init(ctx.getStateStore("seen"));
    }

    @Override
    public void process(FixedKeyRecord<String, byte[]> r) {
      byte[] order = dedupe.first(r.value());
      if (order != null) context.forward(r.withValue(order));
    }
  }

  static Topology topology(String shape, String topic, Schema schema) {
    StreamsBuilder b = new StreamsBuilder();
    b.addStateStore(Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore("seen"), Serdes.String(), Serdes.Integer()));
    var orders = b.stream(topic, Consumed.with(Serdes.String(), Serdes.ByteArray()));
    if (shape.equals("processor")) {
      b.addStateStore(Stores.keyValueStoreBuilder(
          Stores.persistentKeyValueStore("sums"), Serdes.String(), Serdes.ByteArray()));
      orders.process(() -> new DedupeAndSum(schema), "seen", "sums");
    } else if (shape.equals("dsl")) {
      orders.processValues(() -> new DedupeStep(schema), "seen")
          .selectKey((customer, order) -> customer + '\u0000' + ByteBuffer.wrap(order).getInt())
          .groupByKey(Grouped.with(REPARTITION, Serdes.String(), Serdes.ByteArray()))
          .aggregate(() -> null, (key, order, month) -> {
                counted.incrementAndGet();
                return add(month, order);
              },
              Materialized.<String, byte[], KeyValueStore<Bytes, byte[]>>as("sums")
                  .withKeySerde(Serdes.String()).withValueSerde(Serdes.ByteArray()));
    } else {
      throw new IllegalArgumentException("shape: processor or dsl, not " + shape);
    }
    return b.build();
  }

  /** Whether the group has committed every end offset: the source topic's
   *  (ends), and for the dsl shape its repartition topic's, whose last
   *  record in a partition is followed by a transaction marker. */
  static boolean drained(Admin admin, String app, String topic, Map<TopicPartition, Long> ends,
      boolean repartitioned) throws Exception {
    Map<TopicPartition, OffsetAndMetadata> got =
        admin.listConsumerGroupOffsets(app).partitionsToOffsetAndMetadata().get();
    for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
      OffsetAndMetadata o = got.get(e.getKey());
      if (o == null || o.offset() < e.getValue()) return false;
    }
    if (!repartitioned) return true;
    String rt = app + "-" + REPARTITION + "-repartition";
    Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
    for (TopicPartition tp : ends.keySet())
      latest.put(new TopicPartition(rt, tp.partition()), OffsetSpec.latest());
    Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> rends;
    try {
      rends = admin.listOffsets(latest).all().get();
    } catch (Exception e) {
      return false; // not created yet
    }
    for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e : rends.entrySet()) {
      long end = e.getValue().offset();
      OffsetAndMetadata o = got.get(e.getKey());
      if (end > 0 && (o == null || o.offset() < end - 1)) return false;
    }
    return true;
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 8) {
      System.err.println(
          "usage: StreamsBaseline processor|dsl bootstrap topic order.avsc state-dir"
              + " application-id threads end-offset...");
      System.exit(2);
    }
    String shape = args[0], bootstrap = args[1], topic = args[2], app = args[5];
    Schema schema = new Schema.Parser().parse(new File(args[3]));
    Map<TopicPartition, Long> ends = new HashMap<>();
    for (int i = 7; i < args.length; i++)
      ends.put(new TopicPartition(topic, i - 7), Long.parseLong(args[i]));

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[6]));
    p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    Properties ap = new Properties();
    ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(ap);
        KafkaStreams streams = new KafkaStreams(topology(shape, topic, schema), p)) {
      long t0 = System.nanoTime();
      streams.start();
      for (;;) {
        Thread.sleep(50);
        if (streams.state() == KafkaStreams.State.ERROR
            || streams.state() == KafkaStreams.State.NOT_RUNNING) {
          System.err.println("streams stopped: " + streams.state());
          System.exit(1);
        }
        if (drained(admin, app, topic, ends, shape.equals("dsl"))) break;
      }
      double s = (System.nanoTime() - t0) / 1e9;
      System.out.printf("seconds %.3f%norders %d%n", s, counted.get());
      System.out.flush();
    }
  }
}
