#include "fetcher/layer_reader/fetch_executor.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "base/logging.h"

namespace lazypull {

FetchExecutor::FetchExecutor(size_t threads, size_t max_background) {
  threads = std::max<size_t>(threads, 1);
  max_background_ = max_background == 0 ? std::max<size_t>((threads + 1) / 2, 1)
                                        : std::min(max_background, threads);
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

void FetchExecutor::Submit(Priority priority, std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    (priority == Priority::kForeground ? foreground_ : background_).push_back(std::move(task));
  }
  cv_.notify_all();
}

void FetchExecutor::Work() {
  for (;;) {
    std::function<void()> task;
    bool background = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto can_run_background = [&] {
        return !background_.empty() && background_running_ < max_background_;
      };
      cv_.wait(lock, [&] {
        return !foreground_.empty() || can_run_background() || (stopping_ && background_.empty());
      });
      if (!foreground_.empty()) {
        task = std::move(foreground_.front());
        foreground_.pop_front();
      } else if (can_run_background()) {
        task = std::move(background_.front());
        background_.pop_front();
        background = true;
        ++background_running_;
      } else {
        return;  // stopping and drained
      }
    }
    // A task must not throw; if one does anyway (e.g. bad_alloc), it must not take the daemon
    // down: log it and keep serving.
    try {
      task();
    } catch (const std::exception& e) {
      LogError("fetch task threw", {{"error", e.what()}});
    } catch (...) {
      LogError("fetch task threw", {{"error", "unknown exception"}});
    }
    if (background) {
      std::lock_guard<std::mutex> lock(mu_);
      --background_running_;
      cv_.notify_all();
    }
  }
}

}  // namespace lazypull
