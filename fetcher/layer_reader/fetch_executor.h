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

  // Starts `threads` (at least 1) worker threads.
  explicit FetchExecutor(size_t threads);
  ~FetchExecutor();
  FetchExecutor(const FetchExecutor&) = delete;
  FetchExecutor& operator=(const FetchExecutor&) = delete;

  // Queues `task`. Foreground tasks run before any queued background task. `task` must not
  // throw.
  void Submit(Priority priority, std::function<void()> task);

  size_t thread_count() const { return threads_.size(); }

 private:
  void Work();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> foreground_;
  std::deque<std::function<void()>> background_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace lazypull

#endif  // LAZYPULL_FETCHER_LAYER_READER_FETCH_EXECUTOR_H_
