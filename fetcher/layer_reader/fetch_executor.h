// FetchExecutor: a fixed pool of threads that run chunk fetches, foreground (a reader is
// waiting) before background (prefetch, full-layer fetch).
//
// Isolation: every task names its source (e.g. the registry host it fetches from), and at
// most `max_per_source` tasks of one source run at once. A stalled registry therefore holds
// at most that many threads, however many reads of its layers pile up; reads from other
// registries always find a free thread.
//
// Tasks never block the submitter. A task that blocks (a stalled registry) occupies one
// thread until its BlobReader call returns (or is cancelled); callers that must not hang
// wait for results with a deadline instead (see LayerReader). May be shared by several
// LayerReaders.
//
// Thread-safety: all methods are thread-safe. The destructor runs every queued task, then
// joins the threads, so it waits for in-flight BlobReader calls to return. A task that
// throws is logged and dropped; the pool keeps serving.
#ifndef LAZYPULL_FETCHER_LAYER_READER_FETCH_EXECUTOR_H_
#define LAZYPULL_FETCHER_LAYER_READER_FETCH_EXECUTOR_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lazypull {

class FetchExecutor {
 public:
  enum class Priority { kForeground, kBackground };

  // Starts `threads` (at least 1) worker threads. At most `max_background` of them run
  // background tasks at once (0 = half of them, at least 1), so the rest stay free for
  // foreground reads however much background work is queued. At most `max_per_source` tasks
  // of one source run at once (0 = half the threads, at least 1).
  explicit FetchExecutor(size_t threads, size_t max_background = 0, size_t max_per_source = 0);
  ~FetchExecutor();
  FetchExecutor(const FetchExecutor&) = delete;
  FetchExecutor& operator=(const FetchExecutor&) = delete;

  // Queues `task` for `source`. Foreground tasks run before any queued background task; among
  // runnable tasks, first come first served. `task` should not throw.
  void Submit(Priority priority, std::function<void()> task, const std::string& source = "");

  size_t thread_count() const { return threads_.size(); }
  size_t max_background() const { return max_background_; }
  size_t max_per_source() const { return max_per_source_; }

 private:
  struct Task {
    std::string source;
    std::function<void()> run;
  };
  void Work();
  // Takes the first task of `queue` whose source is under its limit. Caller holds mu_.
  bool TakeLocked(std::deque<Task>* queue, Task* out);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> foreground_;
  std::deque<Task> background_;
  std::map<std::string, size_t> running_;  // by source
  bool stopping_ = false;
  size_t max_background_ = 1;
  size_t max_per_source_ = 1;
  size_t background_running_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_FETCH_EXECUTOR_H_
