#include "fetcher/registry/mirror_routes.h"

#include <algorithm>
#include <string>
#include <thread>

namespace lazypull::registry {

MirrorRoutes::MirrorRoutes(MirrorRoutesOptions options) : options_(options) {}

MirrorRoutes::Blob& MirrorRoutes::TouchLocked(std::string_view blob) {
  auto it = blobs_.find(blob);
  if (it == blobs_.end()) {
    if (blobs_.size() >= std::max<size_t>(options_.max_blobs, 2)) {
      // Forget the least recently touched half.
      std::vector<uint64_t> ages;
      ages.reserve(blobs_.size());
      for (const auto& [k, b] : blobs_) ages.push_back(b.touched);
      std::nth_element(ages.begin(), ages.begin() + ages.size() / 2, ages.end());
      const uint64_t cut = ages[ages.size() / 2];
      std::erase_if(blobs_, [&](const auto& kv) { return kv.second.touched < cut; });
    }
    it = blobs_.emplace(std::string(blob), Blob{}).first;
  }
  it->second.touched = ++clock_;
  return it->second;
}

MirrorRoutes::Mark* MirrorRoutes::FindLocked(std::string_view mirror, std::string_view blob) {
  auto b = blobs_.find(blob);
  if (b == blobs_.end()) return nullptr;
  auto m = b->second.marks.find(mirror);
  return m == b->second.marks.end() ? nullptr : &m->second;
}

bool MirrorRoutes::ScopeColdLocked(std::string_view mirror, std::string_view scope,
                                   Clock::time_point now) const {
  if (scope.empty()) return false;
  auto it = cold_scopes_.find(std::string(mirror) + '\n' + std::string(scope));
  return it != cold_scopes_.end() && now - it->second < options_.scope_cold_wait;
}

namespace {

// How long after a scope's first request to a mirror went out the reads of its other blobs
// wait for that answer before going to the next host: a warm mirror near the node answers well
// within it; a cold proxy asks its own upstream first (seconds on a busy link).
constexpr std::chrono::milliseconds kFirstAnswerWait{300};

}  // namespace

bool MirrorRoutes::RangesAllowed(std::string_view mirror, std::string_view blob,
                                 Clock::time_point now, std::string_view scope,
                                 bool* first_request) {
  std::unique_lock<std::mutex> lock(mu_);
  Mark* found = FindLocked(mirror, blob);
  // Polled: another read's answer, or the gather, decides; mu_ is released meanwhile.
  auto wait_and_look_again = [&] {
    const Clock::time_point before = Clock::now();
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    lock.lock();
    now += Clock::now() - before;
    found = FindLocked(mirror, blob);
  };
  while (found == nullptr) {
    if (scope.empty()) return true;
    if (ScopeColdLocked(mirror, scope, now)) {
      NoteAroundLocked(mirror, scope, now);
      return false;
    }
    std::string key = std::string(mirror) + '\n' + std::string(scope);
    auto pending = first_requests_.find(key);
    if (pending == first_requests_.end() || now - pending->second >= options_.first_request_wait) {
      if (options_.first_request_gather.count() > 0) {
        // Gather with the reads of the scope's other blobs arriving now; the smallest digest
        // goes first (the same on every node).
        auto g = gathers_.find(key);
        if (g == gathers_.end() || now - g->second.since >= options_.first_request_wait) {
          if (gathers_.size() >= std::max<size_t>(options_.max_blobs, 2)) gathers_.clear();
          g = gathers_.insert_or_assign(key, Gather{now, {}}).first;
        }
        g->second.blobs.emplace(blob);
        const bool gathering = now - g->second.since < options_.first_request_gather;
        if (!gathering && *g->second.blobs.begin() != blob &&
            now - g->second.since >= options_.first_request_gather + kFirstAnswerWait) {
          gathers_.erase(g);  // the chosen read never went out: this one goes around
          NoteAroundLocked(mirror, scope, now);
          return false;
        }
        if (gathering || *g->second.blobs.begin() != blob) {
          wait_and_look_again();
          continue;
        }
        gathers_.erase(g);
      }
      if (first_requests_.size() >= std::max<size_t>(options_.max_blobs, 2)) {
        first_requests_.clear();
      }
      first_requests_[std::move(key)] = now;
      if (first_request != nullptr) *first_request = true;
      return true;
    }
    // Another read's first request is out: wait for its answer (polled; the mark it leaves
    // decides) until kFirstAnswerWait after it went out, then the next host.
    if (now - pending->second >= kFirstAnswerWait) {
      NoteAroundLocked(mirror, scope, now);
      return false;
    }
    wait_and_look_again();
  }
  Mark& mark = *found;
  if (mark.bad_bytes) return false;
  if (mark.refusals == 0) return true;
  // A program's read probes only at a retry time no bulk reader waits for, and not during
  // the scope's start (a refused probe's round trips through the cache on its path).
  if (now < mark.retry_at || now < mark.bulk_waits_until ||
      (!scope.empty() && StartQuietAtLocked(mirror, scope, now))) {
    if (!scope.empty()) NoteAroundLocked(mirror, scope, now);
    return false;
  }
  mark.retry_at = now + mark.interval;  // this caller probes; the others wait for its answer
  return true;
}

void MirrorRoutes::EndFirstRequest(std::string_view mirror, std::string_view scope) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = first_requests_.find(std::string(mirror) + '\n' + std::string(scope));
  if (it != first_requests_.end()) first_requests_.erase(it);
}

void MirrorRoutes::NoteAroundLocked(std::string_view mirror, std::string_view scope,
                                    Clock::time_point now) {
  if (options_.start_quiet.count() <= 0) return;
  std::string key = std::string(mirror) + '\n' + std::string(scope);
  auto it = bursts_.find(key);
  if (it == bursts_.end()) {
    if (bursts_.size() >= std::max<size_t>(options_.max_blobs, 2)) {
      std::erase_if(bursts_,
                    [&](const auto& kv) { return now - kv.second.last >= options_.start_quiet; });
      if (bursts_.size() >= std::max<size_t>(options_.max_blobs, 2)) bursts_.clear();
    }
    bursts_.emplace(std::move(key), Burst{now, now});
    return;
  }
  Burst& burst = it->second;
  if (now - burst.last >= options_.start_quiet) burst.first = now;  // a new burst
  burst.last = std::max(burst.last, now);
}

std::optional<MirrorRoutes::Clock::time_point> MirrorRoutes::StartQuietAtLocked(
    std::string_view mirror, std::string_view scope, Clock::time_point now) const {
  if (scope.empty() || options_.start_quiet.count() <= 0) return std::nullopt;
  auto it = bursts_.find(std::string(mirror) + '\n' + std::string(scope));
  if (it == bursts_.end()) return std::nullopt;
  const Clock::time_point at =
      std::min(it->second.last + options_.start_quiet, it->second.first + options_.start_defer_max);
  if (now >= at) return std::nullopt;
  return at;
}

std::optional<MirrorRoutes::Clock::time_point> MirrorRoutes::FillingUntil(std::string_view mirror,
                                                                          std::string_view blob,
                                                                          Clock::time_point now,
                                                                          std::string_view scope) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::optional<Clock::time_point> quiet_at = StartQuietAtLocked(mirror, scope, now);
  Mark* found = FindLocked(mirror, blob);
  if (found == nullptr) {
    // Never asked while the scope is cold: the bulk reader's probe will be the mirror's first
    // request for the blob (TakeBulkProbe), sent once the scope's start is over.
    if (quiet_at && ScopeColdLocked(mirror, scope, now)) return quiet_at;
    return std::nullopt;
  }
  Mark& mark = *found;
  if (mark.bad_bytes || mark.refusals == 0 || now - mark.first_refusal >= options_.fill_wait) {
    return std::nullopt;
  }
  const Clock::time_point due = quiet_at ? std::max(mark.retry_at, *quiet_at) : mark.retry_at;
  // The bulk reader comes back then to probe; if it does not (stopped, done), other readers
  // probe again one interval later.
  mark.bulk_waits_until = due + mark.interval;
  if (now >= due) return std::nullopt;
  return due;
}

bool MirrorRoutes::TakeBulkProbe(std::string_view mirror, std::string_view blob,
                                 Clock::time_point now, std::string_view scope) {
  std::lock_guard<std::mutex> lock(mu_);
  Mark* found = FindLocked(mirror, blob);
  if (found == nullptr) {
    if (!ScopeColdLocked(mirror, scope, now)) return false;
    // The mirror's first request for this blob: this bulk reader's probe. Until its answer
    // (or first_retry), programs' reads keep to the next host.
    Blob& b = TouchLocked(blob);
    Mark& mark = b.marks.emplace(std::string(mirror), Mark{}).first->second;
    mark.first_probe = true;
    mark.refusals = 1;
    mark.interval = options_.first_retry;
    mark.first_refusal = now;
    mark.retry_at = now + mark.interval;
    return true;
  }
  Mark& mark = *found;
  if (mark.bad_bytes || mark.refusals == 0 || now < mark.retry_at ||
      now - mark.first_refusal >= options_.fill_wait) {
    return false;
  }
  mark.retry_at = now + mark.interval;
  return true;
}

bool MirrorRoutes::Trusted(std::string_view mirror, std::string_view blob) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto b = blobs_.find(blob);
  if (b == blobs_.end()) return true;
  auto m = b->second.marks.find(mirror);
  return m == b->second.marks.end() || !m->second.bad_bytes;
}

std::chrono::milliseconds MirrorRoutes::MarkNoRanges(std::string_view mirror, std::string_view blob,
                                                     Clock::time_point now,
                                                     std::string_view scope) {
  std::lock_guard<std::mutex> lock(mu_);
  Blob& b = TouchLocked(blob);
  auto m = b.marks.find(mirror);
  if (m == b.marks.end()) m = b.marks.emplace(std::string(mirror), Mark{}).first;
  Mark& mark = m->second;
  if (mark.refusals == 0 || mark.first_probe) {
    mark.first_probe = false;
    mark.first_refusal = now;
    mark.interval = options_.first_retry;
    mark.refusals = 1;
  } else {
    mark.interval = std::min(mark.interval * 2, options_.max_retry);
    ++mark.refusals;
  }
  mark.retry_at = now + mark.interval;
  if (!scope.empty()) {
    if (cold_scopes_.size() >= std::max<size_t>(options_.max_blobs, 2)) {
      std::erase_if(cold_scopes_,
                    [&](const auto& kv) { return now - kv.second >= options_.scope_cold_wait; });
      if (cold_scopes_.size() >= std::max<size_t>(options_.max_blobs, 2)) cold_scopes_.clear();
    }
    cold_scopes_[std::string(mirror) + '\n' + std::string(scope)] = now;
  }
  return mark.interval;
}

void MirrorRoutes::MarkRangesServed(std::string_view mirror, std::string_view blob) {
  std::lock_guard<std::mutex> lock(mu_);
  // Kept (not erased) as an answered blob: a cold scope must not keep its reads away.
  Blob& b = TouchLocked(blob);
  auto m = b.marks.find(mirror);
  if (m == b.marks.end()) {
    b.marks.emplace(std::string(mirror), Mark{});
    return;
  }
  if (m->second.bad_bytes) return;
  m->second = Mark{};
}

void MirrorRoutes::RecordServed(std::string_view mirror, std::string_view blob, ByteRange span) {
  std::lock_guard<std::mutex> lock(mu_);
  Blob& b = TouchLocked(blob);
  if (!b.served.empty() && b.served.front().mirror == mirror &&
      b.served.front().span.offset == span.offset && b.served.front().span.length == span.length) {
    return;
  }
  b.served.push_front({std::string(mirror), span});
  if (b.served.size() > options_.spans_per_blob) b.served.pop_back();
}

std::vector<std::string> MirrorRoutes::ReportBadBytes(std::string_view blob, ByteRange range) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  auto it = blobs_.find(blob);
  if (it == blobs_.end()) return out;
  Blob& b = it->second;
  for (const Served& s : b.served) {
    if (s.span.offset >= range.end() || range.offset >= s.span.end()) continue;
    if (std::find(out.begin(), out.end(), s.mirror) != out.end()) continue;
    out.push_back(s.mirror);
    auto m = b.marks.find(s.mirror);
    if (m == b.marks.end()) m = b.marks.emplace(s.mirror, Mark{}).first;
    m->second.bad_bytes = true;
  }
  return out;
}

}  // namespace lazypull::registry
