#include "base/logging.h"

#include <gtest/gtest.h>

namespace lazypull {
namespace {

TEST(LoggingTest, ParsesContainerdLevelNames) {
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("info"), LogLevel::kInfo);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarn);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  EXPECT_EQ(ParseLogLevel("loud").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoggingTest, WritesOneJsonObjectPerLine) {
  ::testing::internal::CaptureStderr();
  SetLogLevel(LogLevel::kInfo);
  LogDebug("hidden");
  LogInfo("hello", {{"key", "a/b"}, {"n", 3}});
  std::string out = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["msg"], "hello");
  EXPECT_EQ(j["key"], "a/b");
  EXPECT_EQ(j["n"], 3);
  EXPECT_TRUE(j["ts"].get<std::string>().ends_with("Z"));
}

}  // namespace
}  // namespace lazypull
