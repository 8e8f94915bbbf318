/*
 * slots.h -- routing to a Redis Cluster over hiredis 0.14, which knows
 * nothing of clusters.
 *
 * A cluster splits the key space into SLOTS_N hash slots; a key's slot is
 * the CRC16 (XMODEM) of its hash tag (the text between the first "{" and
 * the next "}" when that is not empty) or of the whole key, modulo
 * SLOTS_N.  tierd's keys of one partition share the tag {<topic>.<P>}, so
 * a partition lives in one slot, on one master, and its WATCH/MULTI/EXEC
 * never spans nodes.
 *
 * slots_t holds the slot map (from CLUSTER SLOTS) and one hiredis
 * connection per master, opened when first needed.  What the callers do
 * with replies that redirect (slots_redirect):
 *   MOVED slot host:port  the map is old: slots_refresh, then send again;
 *   ASK slot host:port    the slot is migrating: send that one request to
 *                         host:port, each command after ASKING;
 *   TRYAGAIN, CLUSTERDOWN the cluster is busy or failing over: back off
 *                         and send again later.
 * A node that fails (I/O error, refused connection) is closed and waits
 * out a backoff of its own (100 ms doubling to 2 s), so one master down
 * costs the others nothing; the map is refreshed at the next routing, as
 * a replica may have taken its slots over.
 *
 * The parsing functions are pure (no socket): unit-tested against known
 * values.  Logs nothing; errors are returned as text.
 */
#ifndef TIERD_SLOTS_H
#define TIERD_SLOTS_H

#include <hiredis/hiredis.h>

#include <stddef.h>
#include <stdint.h>

#define SLOTS_N 16384
#define SLOTS_NODES_MAX 64
#define SLOTS_HOST_MAX 256

/* CRC16/XMODEM (poly 0x1021, init 0), as Redis Cluster hashes keys. */
uint16_t slots_crc16(const char *buf, size_t len);
/* The slot of a key, hash tags honoured. */
int slots_key_slot(const char *key, size_t len);

typedef struct slots_addr {
    char host[SLOTS_HOST_MAX];
    int port;
} slots_addr_t;

/* The slot map: every slot's master, as an index into masters[] (-1: no
 * master serves it), and the replicas seen, for refreshing the map when a
 * master is gone. */
typedef struct slots_map {
    int nmasters, nreplicas;
    slots_addr_t masters[SLOTS_NODES_MAX];
    slots_addr_t replicas[SLOTS_NODES_MAX];
    int16_t owner[SLOTS_N];
    int covered; /* slots with a master */
} slots_map_t;

/* Reads a CLUSTER SLOTS reply into m.  0, or -1 with errstr saying what
 * is wrong (an error reply is quoted: "cluster support disabled" is how a
 * node that is no cluster answers). */
int slots_map_parse(const redisReply *r, slots_map_t *m, char *errstr, size_t errstr_size);

/* "host:port" (or "[v6]:port") into a; 0, or -1 when it is not that. */
int slots_addr_parse(const char *s, size_t len, slots_addr_t *a);

enum {
    SLOTS_REDIR_NONE = 0,
    SLOTS_REDIR_MOVED,
    SLOTS_REDIR_ASK,
    SLOTS_REDIR_TRYAGAIN,    /* also LOADING and MASTERDOWN: wait and try again */
    SLOTS_REDIR_CLUSTERDOWN, /* the cluster cannot serve the slot (yet) */
};
/* What an error reply asks for.  For MOVED and ASK, *slot and *to (either
 * may be NULL) get the slot and the node named. */
int slots_redirect(const redisReply *r, int *slot, slots_addr_t *to);

/* ---- connections ---- */

typedef struct slots slots_t;

/* Called on every new connection before use (AUTH, timeouts, keepalive):
 * 0, or -1 with errstr set. */
typedef int (*slots_setup_fn)(void *opaque, redisContext *rc, char *errstr, size_t errstr_size);

/* seeds: "host:port,host:port,...".  NULL with errstr when a seed is not
 * host:port.  Connects to nothing yet. */
slots_t *slots_new(const char *seeds, int timeout_ms, slots_setup_fn setup, void *opaque,
                   char *errstr, size_t errstr_size);
void slots_free(slots_t *s);

/* Asks the cluster for its map (CLUSTER SLOTS): the masters it knows
 * first, then their replicas, then the seeds, until one answers.  Keeps
 * the connections to masters that still are masters.  Fails when no node
 * answers, or when a node answers but is no cluster node. */
int slots_refresh(slots_t *s, char *errstr, size_t errstr_size);
/* Refreshes the map when it was marked stale (a MOVED, a failed node),
 * at most once per 100 ms. */
int slots_refresh_if_stale(slots_t *s, char *errstr, size_t errstr_size);
void slots_mark_stale(slots_t *s);

/* The master index of slot, -1 when no master serves it. */
int slots_master(const slots_t *s, int slot);
/* The index of host:port among the masters, added when it is not (an ASK
 * can name a master the map does not list yet).  The table holds
 * SLOTS_NODES_MAX addresses; when it is full, the index of one that serves
 * no slot and has no connection is given to the new address.  -1 when
 * every index is in use. */
int slots_node(slots_t *s, const slots_addr_t *a);
/* Puts map m in force, as slots_refresh does with what CLUSTER SLOTS
 * said: node indices for its masters, connections to nodes that are no
 * longer masters closed.  Public for the tests. */
void slots_install(slots_t *s, const slots_map_t *m);
/* The open connection to master i, connecting if needed, unless i failed
 * less than its backoff ago (then NULL, errstr saying when the next try is). */
redisContext *slots_conn(slots_t *s, int i, char *errstr, size_t errstr_size);
/* Master i failed: closes its connection, starts or doubles its backoff,
 * marks the map stale. */
void slots_fail(slots_t *s, int i);
/* Master i answered: its backoff is over. */
void slots_ok(slots_t *s, int i);
/* Whether master i is connected and not backing off. */
int slots_up(const slots_t *s, int i);
int slots_nmasters(const slots_t *s);
/* "host:port" of master i. */
const char *slots_name(const slots_t *s, int i);
/* The map as last read (for callers that list what each node serves). */
const slots_map_t *slots_map(const slots_t *s);

#endif
