#include "fetcher/layer_reader/fetch_executor.h"

#include <algorithm>
#include <utility>

namespace lazypull {

FetchExecutor::FetchExecutor(size_t threads) {
  threads = std::max<size_t>(threads, 1);
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
  cv_.notify_one();
}

void FetchExecutor::Work() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !foreground_.empty() || !background_.empty(); });
      if (!foreground_.empty()) {
        task = std::move(foreground_.front());
        foreground_.pop_front();
      } else if (!background_.empty()) {
        task = std::move(background_.front());
        background_.pop_front();
      } else {
        return;  // stopping and drained
      }
    }
    task();
  }
}

}  // namespace lazypull
