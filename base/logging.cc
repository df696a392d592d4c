#include "base/logging.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace lazypull {
namespace {

// The log sink is process-wide by nature (stderr); its level is the only mutable state and is
// atomic, so concurrent SetLogLevel/Log are safe.
std::atomic<int>& LevelCell() {
  static std::atomic<int> level{static_cast<int>(LogLevel::kInfo)};
  return level;
}

std::mutex& WriteMutex() {
  static std::mutex mu;
  return mu;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::string NowRfc3339() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, micros);
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(std::string_view text) {
  if (text == "debug" || text == "trace") return LogLevel::kDebug;
  if (text == "info") return LogLevel::kInfo;
  if (text == "warn" || text == "warning") return LogLevel::kWarn;
  if (text == "error" || text == "fatal" || text == "panic") return LogLevel::kError;
  return absl::InvalidArgumentError(fmt::format("unknown log level \"{}\"", text));
}

void SetLogLevel(LogLevel level) { LevelCell().store(static_cast<int>(level)); }

LogLevel GetLogLevel() { return static_cast<LogLevel>(LevelCell().load()); }

void Log(LogLevel level, std::string_view msg, const nlohmann::json& fields) {
  if (static_cast<int>(level) < LevelCell().load(std::memory_order_relaxed)) return;
  nlohmann::ordered_json line;
  line["ts"] = NowRfc3339();
  line["level"] = LevelName(level);
  line["msg"] = std::string(msg);
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) line[it.key()] = it.value();
  }
  std::string text =
      line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(WriteMutex());
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

}  // namespace lazypull
