#include "fetcher/layer_reader/fetch_executor.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "base/logging.h"

namespace lazypull {

FetchExecutor::FetchExecutor(size_t threads, size_t max_background, size_t max_per_source) {
  threads = std::max<size_t>(threads, 1);
  max_background_ = max_background == 0 ? std::max<size_t>((threads + 1) / 2, 1)
                                        : std::min(max_background, threads);
  max_per_source_ =
      max_per_source == 0 ? std::max<size_t>(threads / 2, 1) : std::min(max_per_source, threads);
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
}

FetchExecutor::~FetchExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void FetchExecutor::Submit(Priority priority, std::function<void()> task,
                           const std::string& source) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    (priority == Priority::kForeground ? foreground_ : background_)
        .push_back(Task{source, std::move(task)});
  }
  cv_.notify_all();
}

bool FetchExecutor::TakeLocked(std::deque<Task>* queue, Task* out) {
  for (auto it = queue->begin(); it != queue->end(); ++it) {
    if (running_[it->source] >= max_per_source_) continue;
    *out = std::move(*it);
    queue->erase(it);
    return true;
  }
  return false;
}

void FetchExecutor::Work() {
  for (;;) {
    Task task;
    bool background = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      for (;;) {
        if (TakeLocked(&foreground_, &task)) break;
        if (background_running_ < max_background_ && TakeLocked(&background_, &task)) {
          background = true;
          ++background_running_;
          break;
        }
        // Drained: queued tasks all run before the pool stops.
        if (stopping_ && foreground_.empty() && background_.empty()) return;
        cv_.wait(lock);
      }
      ++running_[task.source];
    }
    // A task must not throw; if one does anyway (e.g. bad_alloc), it must not take the daemon
    // down: log it and keep serving.
    try {
      task.run();
    } catch (const std::exception& e) {
      LogError("fetch task threw", {{"error", e.what()}, {"source", task.source}});
    } catch (...) {
      LogError("fetch task threw", {{"error", "unknown exception"}, {"source", task.source}});
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--running_[task.source] == 0) running_.erase(task.source);
      if (background) --background_running_;
    }
    cv_.notify_all();
  }
}

}  // namespace lazypull
