// FetchExecutor: a fixed pool of threads that run chunk fetches, foreground (a reader is
// waiting) before background (prefetch, full-layer fetch).
//
// Tasks never block the submitter. A task that blocks (a stalled registry) occupies one
// thread until its BlobReader call returns; callers that must not hang wait for results
// with a deadline instead (see LayerReader). May be shared by several LayerReaders.
//
// Thread-safety: all methods are thread-safe. The destructor runs every queued task, then
// joins the threads, so it waits for in-flight BlobReader calls to return.
#ifndef LAZYPULL_FETCHER_LAYER_READER_FETCH_EXECUTOR_H_
#define LAZYPULL_FETCHER_LAYER_READER_FETCH_EXECUTOR_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lazypull {

class FetchExecutor {
 public:
  enum class Priority { kForeground, kBackground };

  // Starts `threads` (at least 1) worker threads. At most `max_background` of them run
  // background tasks at once (0 = half of them, at least 1), so the rest stay free for
  // foreground reads however much background work is queued.
  explicit FetchExecutor(size_t threads, size_t max_background = 0);
  ~FetchExecutor();
  FetchExecutor(const FetchExecutor&) = delete;
  FetchExecutor& operator=(const FetchExecutor&) = delete;

  // Queues `task`. Foreground tasks run before any queued background task. `task` must not
  // throw.
  void Submit(Priority priority, std::function<void()> task);

  size_t thread_count() const { return threads_.size(); }
  size_t max_background() const { return max_background_; }

 private:
  void Work();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> foreground_;
  std::deque<std::function<void()>> background_;
  bool stopping_ = false;
  size_t max_background_ = 1;
  size_t background_running_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_FETCH_EXECUTOR_H_
