// MirrorRoutes: per (mirror host, blob) routing decisions of the registry client, so that lazy
// range reads stay lazy behind pull-through caches and mirrors that ignore Range.
//
// A pull-through cache (distribution's proxy mode, Harbor's proxy cache) answers a Range
// request for a blob it has not stored yet with 200 and the WHOLE blob streamed from its
// upstream; reading such an answer up to the byte we need costs up to the whole layer. The
// client abandons such an answer at once (registry_client.h) and marks the (mirror, blob) pair
// "no ranges": range reads of that blob skip the mirror and go to the next host of hosts.toml
// (the upstream) until the mark's retry time. Manifests and whole-blob reads still go to the
// mirror first, which is what fills it.
//
// When to ask the mirror again. distribution's proxy, on its first request for a blob, starts
// a background copy of the whole blob from its upstream into its own storage (independent of
// the client's connection, so even our abandoned request starts it); once stored, it serves
// ranges with 206 from disk. How long the copy takes is blob size / the cache's upstream
// bandwidth, which lazypull cannot see. So the retry interval starts at `first_retry` (1 s) and
// doubles with each consecutive refusal up to `max_retry` (5 min): the mirror is found serving
// ranges at most about twice the copy time after it could, at the cost of log2(copy time / 1 s)
// probes, each abandoned at its headers (a few KiB from the socket). Caches that never honour
// Range (some P2P daemons) settle at one probe per blob per 5 minutes. When a retry time
// comes, only the first reader probes the mirror: the mark moves one interval on at once, so
// concurrent readers keep using the upstream until the probe's answer is known.
//
// Bulk readers wait for a filling mirror. While a mirror refuses ranges of a blob, on-demand
// reads go to the upstream (a program is waiting), but a background fetch of the whole layer
// can wait: on N nodes behind a cold cache, reading the upstream meanwhile would cost its
// egress up to N more copies of the blob, while the cache is copying it once. FillingUntil
// tells such a reader when the mirror is asked again; it waits at most `fill_wait` from the
// mirror's first refusal of the blob (a cache copying a 1 GiB layer over 100 Mbit/s takes
// about 90 s), after which it reads from the next host as on-demand reads do (a mirror that
// never serves ranges must not keep layers from becoming local). While a bulk reader waits for
// a mirror, it also takes the mirror's probes (TakeBulkProbe): a program's read at the retry
// time goes straight to the next host instead of paying a refused probe's round trips (through
// a cache that first asks its own upstream) on the path of a container's start.
//
// Blobs not asked yet, behind a mirror that is filling itself. distribution's proxy starts
// copying a blob from its upstream, unpaced, on the FIRST request for it, whoever sends it and
// whatever it asks; that copy shares the registry's link with the ranges a starting container
// needs. Once a mirror refused ranges of a blob of a repository (the `scope` argument; empty =
// none), the other blobs of that repository this client has not asked the mirror about yet are
// most likely not stored either: for `scope_cold_wait` after the scope's last refusal, range
// reads of such a blob (a TOC, a program's reads) go to the next host at once instead of
// starting one more copy on the start's path and paying a refused request's round trips
// through the cache. The mirror's first request for such a blob is left to a bulk reader
// (TakeBulkProbe), which runs once the layer had no on-demand read for a while: it starts the copy
// then, and its answer decides (served: ranges go to the mirror; refused: a no-ranges mark as
// any other). A warm mirror never refuses, so nothing changes for it; blobs the mirror served
// ranges of stay served. The same holds while the scope's FIRST request to the mirror waits
// for its answer (a container's layers are opened at once, and a cold proxy answers only after
// asking its own upstream, seconds on a loaded link): reads of the scope's other blobs wait
// for it up to 300 ms after it went out, then go to the next host: a cold cache gets one request
// per node during the start instead of one per layer; a warm one answers within the wait.
//
// Probes wait for the start to end. Every request that reaches a cold distribution proxy for
// a blob it has not stored starts a copy of the WHOLE blob from its upstream, unpaced, and
// every refused request costs the cache's own round trips to its upstream before its answer;
// a probe sent while a container starts (a background fetch's probe of a layer not asked yet,
// a program's read at a retry time) puts one more whole-layer copy, or one more refused round
// trip, on the link the start's reads from the upstream need (measured with 4 nodes: a 52 MB
// copy started by a background probe 5 s into a 10 s start). So while the reads of a cold scope
// go around the mirror (its start), the scope's probes wait: bulk readers are told to wait
// (FillingUntil) and programs' reads keep going around until no read of the scope went around
// the mirror for `start_quiet`; a scope read around without pause is probed at most
// `start_defer_max` after the first read of the burst. Nothing changes for a warm mirror (its
// reads never go around).
//
// One first request for the whole fleet. A Prepare opens its layer and, at once, preloads the
// image's other layers, so which blob a node asks a mirror first is a race between threads;
// nodes that pick different blobs make a cold cache copy several layers at once during the
// start (measured: both layers of a 2-layer image, 153 MB, started 30 ms apart). So the reads
// of a scope's blobs arriving within `first_request_gather` of the first of them gather, and
// the smallest digest among them becomes the first request: every node starting the image
// picks the same blob, and the cache copies one layer during the start.
//
// A mirror that served bytes of a blob that then failed verification (ReportBadBytes) is
// excluded for that blob for good (ranges and whole reads): a chunk digest mismatch means the
// mirror holds different bytes under that digest, which waiting will not fix.
//
// Memory is bounded: at most `max_blobs` blobs are tracked; past that the oldest-touched half
// is forgotten (a forgotten mark costs one more abandoned probe, never a wrong byte: every
// chunk is verified).
//
// Thread-safe: every method may be called concurrently.
#ifndef LAZYPULL_FETCHER_REGISTRY_MIRROR_ROUTES_H_
#define LAZYPULL_FETCHER_REGISTRY_MIRROR_ROUTES_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "lazypull/blob_reader.h"

namespace lazypull::registry {

struct MirrorRoutesOptions {
  std::chrono::milliseconds first_retry{1000};
  std::chrono::milliseconds max_retry{300000};
  // How long after a mirror's first refusal of a blob FillingUntil still asks bulk readers to
  // wait for it.
  std::chrono::milliseconds fill_wait{300000};
  // How long after a mirror's last refusal of a blob of a scope (repository) range reads of
  // that scope's blobs not asked yet skip the mirror (see the file comment).
  std::chrono::milliseconds scope_cold_wait{60000};
  // Longest a scope's first request to a mirror keeps the scope's other blobs away.
  std::chrono::milliseconds first_request_wait{30000};
  // How long reads of a scope's blobs arriving together gather before one of them, the
  // smallest digest, becomes the scope's first request (see the file comment). 0: none.
  std::chrono::milliseconds first_request_gather{50};
  size_t max_blobs = 4096;
  // Byte spans remembered per blob (which mirror delivered bytes of which span), newest first.
  size_t spans_per_blob = 64;
  // The start's quiet: the mirror's probes of a cold scope's blobs (a bulk reader's, or a
  // program's read at a retry time) wait until no range read of the scope went around the
  // mirror for this long (see the file comment), for at most `start_defer_max` from the
  // first read of such a burst. Zero turns the wait off.
  std::chrono::milliseconds start_quiet{3000};
  std::chrono::milliseconds start_defer_max{30000};
};

class MirrorRoutes {
 public:
  using Clock = std::chrono::steady_clock;

  explicit MirrorRoutes(MirrorRoutesOptions options = {});

  // Whether range reads of `blob` (a digest string) may be sent to `mirror` ("host[:port]") at
  // `now`. False while a "no ranges" mark waits for its retry time, or after ReportBadBytes.
  // When the retry time has come, returns true to this one caller and moves the retry time
  // one interval on (see the file comment) — unless a bulk reader waits for the mirror
  // (FillingUntil): the probe is then its own (TakeBulkProbe) and this returns false. Also
  // false for a blob never answered by `mirror` while its `scope` is cold (the mirror refused
  // ranges of another blob of it within scope_cold_wait), and at a retry time while the
  // scope's reads go around the mirror (its start: the probe waits, see the file comment).
  // A read that would be `scope`'s first request first gathers with the scope's reads arriving
  // within first_request_gather and goes out only if its blob is the smallest digest among
  // them (blocking meanwhile). While `scope`'s first request to `mirror` waits for its answer,
  // blocks up to 300 ms from its start for it, then false for blobs never answered; when it makes
  // that first request (a blob never answered, the scope neither cold nor waiting), *first_request
  // (if given) is set true and the caller must call EndFirstRequest once the answer (or an error)
  // is in.
  bool RangesAllowed(std::string_view mirror, std::string_view blob, Clock::time_point now,
                     std::string_view scope = {}, bool* first_request = nullptr);
  // The first request RangesAllowed let out for `scope` has its answer (reported as usual with
  // MarkRangesServed / MarkNoRanges) or failed.
  void EndFirstRequest(std::string_view mirror, std::string_view scope);
  // When `mirror` refuses ranges of `blob` for now (a "no ranges" mark whose retry time is
  // after `now`) and its first refusal is less than `fill_wait` before `now`: that retry time,
  // which a bulk reader that can wait should wait for instead of reading the next host (see
  // the file comment). nullopt when ranges may go to the mirror now (or a probe is due), the
  // mirror is excluded for the blob (bad bytes), or it has refused for longer than fill_wait.
  // Does not move the retry time.
  // Records that a bulk reader waits for the mirror: until one interval after that retry time,
  // RangesAllowed leaves the probe to it (TakeBulkProbe).
  // With `scope`: also while the scope's reads go around the mirror (its start, see the file
  // comment), the time it will have been quiet for start_quiet, for a blob refused or never
  // answered while the scope is cold.
  std::optional<Clock::time_point> FillingUntil(std::string_view mirror, std::string_view blob,
                                                Clock::time_point now, std::string_view scope = {});
  // For a bulk reader that FillingUntil let go (nullopt): whether it should probe `mirror` for
  // ranges of `blob` now: a no-ranges mark within fill_wait whose retry time has come, or a
  // blob never answered by `mirror` while its `scope` is cold (the bulk reader's probe is then
  // the mirror's first request for the blob). True to one caller per retry time, which moves
  // the retry time one interval on (for a blob never answered: records a pending first probe
  // that keeps programs' reads away from the mirror until first_retry after `now`); the caller
  // reports the answer with MarkRangesServed or MarkNoRanges.
  bool TakeBulkProbe(std::string_view mirror, std::string_view blob, Clock::time_point now,
                     std::string_view scope = {});
  // Whether `mirror` may serve `blob` at all (false after ReportBadBytes).
  bool Trusted(std::string_view mirror, std::string_view blob) const;

  // `mirror` answered a range read of `blob` with other bytes than asked (200 with the whole
  // blob, or a 206 for another range). Returns the time until it is asked for ranges again.
  // Makes `scope` (when not empty) cold for scope_cold_wait.
  std::chrono::milliseconds MarkNoRanges(std::string_view mirror, std::string_view blob,
                                         Clock::time_point now, std::string_view scope = {});
  // `mirror` answered a range read of `blob` as asked: the no-ranges mark and its backoff are
  // forgotten, and the blob counts as answered (a cold scope no longer keeps reads away).
  void MarkRangesServed(std::string_view mirror, std::string_view blob);

  // `mirror` delivered bytes of `blob` within `span` (the span a range request asked for).
  void RecordServed(std::string_view mirror, std::string_view blob, ByteRange span);
  // Bytes of `blob` in `range` failed verification: every mirror recorded as having delivered
  // bytes overlapping `range` is excluded for `blob`. Returns those mirrors (also the ones
  // already excluded, so a caller knows a refetch goes elsewhere).
  std::vector<std::string> ReportBadBytes(std::string_view blob, ByteRange range);

 private:
  // A (mirror, blob) pair the mirror answered, or a first probe pending (TakeBulkProbe of a
  // blob never answered): no entry = never answered.
  struct Mark {
    bool bad_bytes = false;
    bool first_probe = false;  // refusals == 1 stands for a pending first probe, not a refusal
    int refusals = 0;          // consecutive; 0 = ranges allowed
    Clock::time_point retry_at;
    Clock::time_point first_refusal;     // of the current run of refusals
    Clock::time_point bulk_waits_until;  // a bulk reader probes until then (FillingUntil)
    std::chrono::milliseconds interval{0};
  };
  struct Served {
    std::string mirror;
    ByteRange span;
  };
  struct Blob {
    std::map<std::string, Mark, std::less<>> marks;  // by mirror
    std::deque<Served> served;                       // newest first
    uint64_t touched = 0;
  };
  // The entry of `blob`, created (and the map pruned) if needed. Caller holds mu_.
  Blob& TouchLocked(std::string_view blob);
  // Whether `scope` is cold for `mirror` at `now` (a refusal within scope_cold_wait). Caller
  // holds mu_.
  bool ScopeColdLocked(std::string_view mirror, std::string_view scope,
                       Clock::time_point now) const;
  // The mark of (`mirror`, `blob`); nullptr when `mirror` never answered `blob` and no first
  // probe is pending. Caller holds mu_.
  Mark* FindLocked(std::string_view mirror, std::string_view blob);
  // A range read of `scope` goes around `mirror` at `now` (its start). Caller holds mu_.
  void NoteAroundLocked(std::string_view mirror, std::string_view scope, Clock::time_point now);
  // Until when probes of `scope` at `mirror` wait for its start to be over (see the file
  // comment); nullopt when they need not wait at `now`. Caller holds mu_.
  std::optional<Clock::time_point> StartQuietAtLocked(std::string_view mirror,
                                                      std::string_view scope,
                                                      Clock::time_point now) const;

  const MirrorRoutesOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, Blob, std::less<>> blobs_;
  // Last refusal by mirror and scope, keyed "mirror\nscope"; at most max_blobs entries.
  std::map<std::string, Clock::time_point, std::less<>> cold_scopes_;
  // Scopes whose first request to a mirror waits for its answer, since when; same keys. An
  // entry older than first_request_wait is ignored (a caller that never ended it).
  std::map<std::string, Clock::time_point, std::less<>> first_requests_;
  // Blobs whose reads gather to become a scope's first request, since when; same keys.
  struct Gather {
    Clock::time_point since;
    std::set<std::string, std::less<>> blobs;
  };
  std::map<std::string, Gather, std::less<>> gathers_;
  // Reads of a scope going around a mirror, by the same keys: the first and the last read of
  // the current burst (reads less than start_quiet apart); at most max_blobs entries.
  struct Burst {
    Clock::time_point first;
    Clock::time_point last;
  };
  std::map<std::string, Burst, std::less<>> bursts_;
  uint64_t clock_ = 0;  // touch counter, for pruning
};

}  // namespace lazypull::registry

#endif  // LAZYPULL_FETCHER_REGISTRY_MIRROR_ROUTES_H_
