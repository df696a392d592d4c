// ModuleFinder and WalkPythonImports over an image-like tree whose modules were compiled by
// the machine's python3: which files each round fetches, exactly.
#include "fetcher/startup/python_import_walk.h"

#include <dirent.h>

#include <set>
#include <string>
#include <vector>

#include "fetcher/elf/file_tree.h"
#include "fetcher/python/module_finder.h"
#include "fetcher/python/source_imports.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/subprocess.h"
#include "tests/harness/test_env.h"
#include "tests/python/python_test_util.h"

namespace lazypull::startup {
namespace {

using ::lazypull::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAreArray;

class PythonImportWalkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    py_ = testing::GetHostPython();
    ASSERT_FALSE(py_.version.empty());
    lib_ = "usr/lib/python" + py_.version;
    testing::WriteAndCompile(
        root_.path(),
        {{"usr/bin/python" + py_.version,
          "\x7f"
          "ELF"},
         {lib_ + "/encodings/__init__.py", "import codecs\nfrom . import aliases\n"},
         {lib_ + "/encodings/aliases.py", "aliases = {'utf8': 'utf_8'}\n"},
         {lib_ + "/encodings/utf_8.py", "import codecs\n"},
         {lib_ + "/encodings/latin_1.py", "import codecs\n"},
         {lib_ + "/json/__init__.py",
          "from .decoder import JSONDecoder\nfrom .encoder import JSONEncoder\nimport codecs\n"},
         {lib_ + "/json/decoder.py",
          "import re\nfrom json import scanner\ntry:\n    from _json import scanstring\n"
          "except ImportError:\n    scanstring = None\n"},
         {lib_ + "/json/scanner.py", "import re\n"},
         {lib_ + "/json/encoder.py", "import re\n"},
         {lib_ + "/json/tool.py", "import argparse\n"},
         {lib_ + "/re/__init__.py", "import enum\nfrom . import _parser\nimport functools\n"},
         {lib_ + "/re/_parser.py", "from ._constants import *\n"},
         {lib_ + "/enum.py",
          "import sys\nfrom types import MappingProxyType\nfrom functools import reduce\n"
          "def lazy():\n    import unused\n"},
         {lib_ + "/functools.py", "from collections import namedtuple\n"},
         {lib_ + "/collections/__init__.py", "import keyword\n"},
         {lib_ + "/keyword.py", "kwlist = []\n"},
         {lib_ + "/unused.py", "x = 1\n"},
         {lib_ + "/sitecustomize.py", "\n"},
         {lib_ + "/lib-dynload/_json." + py_.cache_tag + "-" +
              std::string(python::HostMultiarch()) + ".so",
          "\x7f"
          "ELF"},
         {"usr/lib/python3/dist-packages/distutils-precedence.pth",
          "import os; var = 'X'; enabled = 1; enabled and __import__('_distutils_hack').add()\n"},
         {"usr/lib/python3/dist-packages/paths.pth", "/opt/somewhere\n# a comment\n"},
         {"usr/lib/python3/dist-packages/_distutils_hack/__init__.py", "import os\n"},
         {"app/main.py", "import helper\nimport json\nfrom collections import abc\n"},
         {"app/helper.py", "import keyword\n"},
         {lib_ + "/collections/abc.py", "\n"},
         // Modules CPython >= 3.11 runs frozen (and one package around a frozen submodule).
         {lib_ + "/os.py", "import abc\nimport stat\nimport posixpath\n"},
         {lib_ + "/abc.py", "\n"},
         {lib_ + "/stat.py", "\n"},
         {lib_ + "/posixpath.py", "import genericpath\n"},
         {lib_ + "/genericpath.py", "\n"},
         {lib_ + "/site.py", "import os\nimport _sitebuiltins\n"},
         {lib_ + "/_sitebuiltins.py", "\n"},
         {lib_ + "/importlib/__init__.py", "\n"},
         {lib_ + "/importlib/util.py", "import keyword\n"},
         {"usr/lib/locale/C.utf8/LC_CTYPE", "ctype"},
         {"usr/share/zoneinfo/Etc/UTC", "TZif"}});
    ASSERT_TRUE(testing::RunCommand({"mkdir", "-p", root_.path() + "/etc"}).ok());
    ASSERT_TRUE(testing::RunCommand(
                    {"ln", "-sf", "/usr/share/zoneinfo/Etc/UTC", root_.path() + "/etc/localtime"})
                    .ok());
    tree_.emplace(root_.path());
  }

  std::string Pyc(const std::string& dir, const std::string& module) const {
    return "/" + dir + "/__pycache__/" + module + "." + py_.cache_tag + ".pyc";
  }

  // Runs the walk, recording each round's fetched paths.
  PythonWalkResult Walk(const PythonWalkStart& start, const PythonWalkOptions& options = {}) {
    rounds_.clear();
    ListDirFn list = [&](std::string_view dir) {
      std::vector<std::string> names;
      if (DIR* d = opendir((root_.path() + std::string(dir)).c_str())) {
        while (dirent* e = readdir(d)) {
          std::string n = e->d_name;
          if (n != "." && n != "..") names.push_back(n);
        }
        closedir(d);
      }
      return names;
    };
    PythonFetchFn fetch = [&](std::span<const PythonFetch> files) {
      std::vector<absl::StatusOr<std::string>> out;
      std::set<std::string> round;
      for (const PythonFetch& f : files) {
        round.insert(f.path);
        if (f.read) {
          out.push_back(testing::ReadFile(root_.path() + f.path));
        } else {
          out.push_back(std::string());
        }
      }
      rounds_.push_back(round);
      return out;
    };
    return WalkPythonImports(*tree_, list, fetch, start, options);
  }

  TempDir root_;
  testing::HostPython py_;
  std::string lib_;
  std::optional<elf::LocalFileTree> tree_;
  std::vector<std::set<std::string>> rounds_;
};

TEST_F(PythonImportWalkTest, FinderFollowsCPythonsOrder) {
  std::optional<python::ModuleFinder> finder =
      python::ModuleFinder::ForPyc(*tree_, Pyc(lib_ + "/json", "__init__"));
  ASSERT_TRUE(finder.has_value());
  EXPECT_EQ(finder->stdlib(), "/" + lib_);
  EXPECT_THAT(finder->search_path(), ElementsAre("/" + lib_, "/" + lib_ + "/lib-dynload",
                                                 "/usr/lib/python3/dist-packages"));
  using Kind = python::ModuleFile::Kind;
  EXPECT_THAT(finder->FindAbsolute("json.decoder"),
              ElementsAre(python::ModuleFile{Kind::kBytecode, Pyc(lib_ + "/json", "__init__"),
                                             "/" + lib_ + "/json"},
                          python::ModuleFile{Kind::kBytecode, Pyc(lib_ + "/json", "decoder"), ""}));
  std::vector<python::ModuleFile> ext = finder->FindAbsolute("_json");
  ASSERT_EQ(ext.size(), 1u);
  EXPECT_EQ(ext[0].kind, Kind::kExtension);
  EXPECT_TRUE(finder->FindAbsolute("no_such_module").empty());
  EXPECT_TRUE(finder->FindAbsolute("../etc").empty());
}

TEST_F(PythonImportWalkTest, WalksAModulesImportsLevelByLevel) {
  const std::string start = Pyc(lib_ + "/json", "__init__");
  PythonWalkResult r = Walk({.pycs = {start}});
  EXPECT_FALSE(r.truncated);
  const std::string so = "/" + lib_ + "/lib-dynload/_json." + py_.cache_tag + "-" +
                         std::string(python::HostMultiarch()) + ".so";
  EXPECT_THAT(
      rounds_,
      ElementsAre(
          std::set<std::string>{start},
          std::set<std::string>{Pyc(lib_ + "/json", "decoder"), Pyc(lib_ + "/json", "encoder")},
          std::set<std::string>{Pyc(lib_ + "/re", "__init__"), Pyc(lib_ + "/json", "scanner"), so},
          std::set<std::string>{Pyc(lib_, "enum"), Pyc(lib_ + "/re", "_parser"),
                                Pyc(lib_, "functools")},
          std::set<std::string>{Pyc(lib_ + "/collections", "__init__")},
          std::set<std::string>{Pyc(lib_, "keyword")}));
  EXPECT_EQ(r.rounds, 6u);
  EXPECT_EQ(r.files, 11u);
  EXPECT_EQ(r.modules_parsed, 10u);  // every .pyc; the extension is only fetched
  EXPECT_TRUE(r.problems.empty()) << r.problems.front();
}

TEST_F(PythonImportWalkTest, InterpreterStartFetchesWhatEveryStartReads) {
  PythonWalkResult r = Walk({.interpreter = "/usr/bin/python" + py_.version});
  ASSERT_EQ(rounds_.size(), 2u);
  EXPECT_THAT(rounds_[0], UnorderedElementsAreArray(std::set<std::string>{
                              "/usr/lib/locale/C.utf8/LC_CTYPE",
                              "/usr/share/zoneinfo/Etc/UTC",
                              Pyc(lib_ + "/encodings", "__init__"),
                              Pyc(lib_ + "/encodings", "aliases"),
                              Pyc(lib_ + "/encodings", "utf_8"),
                              Pyc(lib_, "sitecustomize"),
                              "/usr/lib/python3/dist-packages/distutils-precedence.pth",
                              "/usr/lib/python3/dist-packages/paths.pth",
                          }));
  EXPECT_THAT(rounds_[1],
              ElementsAre(Pyc("usr/lib/python3/dist-packages/_distutils_hack", "__init__")));
  EXPECT_FALSE(r.truncated);
}

// The walk's files beyond what every start reads (round 1 of an interpreter start).
std::set<std::string> Beyond(const std::set<std::string>& round) {
  std::set<std::string> out;
  for (const std::string& p : round) {
    if (p.find("/encodings/") == std::string::npos &&
        p.find("sitecustomize") == std::string::npos && !p.ends_with(".pth") &&
        p.find("_distutils_hack") == std::string::npos && !p.starts_with("/usr/lib/locale") &&
        !p.starts_with("/usr/share/zoneinfo")) {
      out.insert(p);
    }
  }
  return out;
}

TEST_F(PythonImportWalkTest, CommandLineCodeModuleAndScript) {
  const std::string py = "/usr/bin/python" + py_.version;
  Walk({.interpreter = py, .argv = {"-u", "-c", "import json; print(1)"}});
  ASSERT_GE(rounds_.size(), 1u);
  EXPECT_EQ(Beyond(rounds_[0]), (std::set<std::string>{Pyc(lib_ + "/json", "__init__")}));
  EXPECT_EQ(rounds_.size(), 6u);  // then json's imports, level by level (as above)

  Walk({.interpreter = py, .argv = {"-X", "dev", "-m", "json.tool"}});
  EXPECT_EQ(Beyond(rounds_[0]),
            (std::set<std::string>{Pyc(lib_ + "/json", "__init__"), Pyc(lib_ + "/json", "tool")}));

  // A relative script: found in the working directory; its own directory comes first.
  Walk({.interpreter = py, .argv = {"main.py"}, .working_dir = "/app"});
  EXPECT_EQ(Beyond(rounds_[0]), (std::set<std::string>{"/app/main.py"}));
  ASSERT_GE(rounds_.size(), 2u);
  EXPECT_EQ(Beyond(rounds_[1]),
            (std::set<std::string>{Pyc("app", "helper"), Pyc(lib_ + "/json", "__init__"),
                                   Pyc(lib_ + "/collections", "__init__"),
                                   Pyc(lib_ + "/collections", "abc")}));
}

// CPython >= 3.11 runs os, site, stat, posixpath, ... frozen into the interpreter and reads
// none of their files: the walk fetches none of them, unless -X frozen_modules=off.
TEST_F(PythonImportWalkTest, FrozenStandardModulesAreNotFetched) {
  ASSERT_GE(py_.cache_tag, "cpython-311") << "the build machine's python3 freezes its stdlib";
  std::optional<python::ModuleFinder> finder =
      python::ModuleFinder::ForPyc(*tree_, Pyc(lib_ + "/json", "__init__"));
  ASSERT_TRUE(finder.has_value());
  using Kind = python::ModuleFile::Kind;
  const python::ModuleFile frozen{Kind::kFrozen, "", ""};
  EXPECT_THAT(finder->FindAbsolute("os"), ElementsAre(frozen));
  EXPECT_THAT(finder->FindAbsolute("os.path"), ElementsAre(frozen));
  EXPECT_THAT(finder->FindAbsolute("importlib.util"),
              ElementsAre(python::ModuleFile{Kind::kBytecode, Pyc(lib_ + "/importlib", "__init__"),
                                             "/" + lib_ + "/importlib"},
                          frozen));
  EXPECT_THAT(finder->WithoutFrozenModules().FindAbsolute("os"),
              ElementsAre(python::ModuleFile{Kind::kBytecode, Pyc(lib_, "os"), ""}));

  auto all = [&] {
    std::set<std::string> out;
    for (const auto& round : rounds_) out.insert(round.begin(), round.end());
    return out;
  };
  const std::string py = "/usr/bin/python" + py_.version;
  const std::vector<std::string> frozen_files = {
      Pyc(lib_, "os"),           Pyc(lib_, "abc"),  Pyc(lib_, "stat"),
      Pyc(lib_, "posixpath"),    Pyc(lib_, "site"), Pyc(lib_, "genericpath"),
      Pyc(lib_, "_sitebuiltins")};
  PythonWalkResult r = Walk({.interpreter = py, .argv = {"-c", "import os, importlib.util"}});
  EXPECT_TRUE(r.problems.empty()) << r.problems.front();
  std::set<std::string> files = all();
  EXPECT_TRUE(files.count(Pyc(lib_ + "/importlib", "__init__")));
  EXPECT_TRUE(files.count(Pyc(lib_ + "/encodings", "__init__")));
  for (const std::string& f : frozen_files) EXPECT_FALSE(files.count(f)) << f;
  // importlib.util's own imports are not followed either: it is never read.
  EXPECT_FALSE(files.count(Pyc(lib_, "keyword")));

  Walk({.interpreter = py, .argv = {"-X", "frozen_modules=off", "-c", "import os"}});
  files = all();
  for (const std::string& f : frozen_files) EXPECT_TRUE(files.count(f)) << f;
  Walk({.interpreter = py, .argv = {"-Xfrozen_modules=off", "-c", "import os"}});
  EXPECT_TRUE(all().count(Pyc(lib_, "os")));
  // After -c, "-X frozen_modules=off" is the program's argv, not the interpreter's option.
  Walk({.interpreter = py, .argv = {"-c", "import os", "-X", "frozen_modules=off"}});
  EXPECT_FALSE(all().count(Pyc(lib_, "os")));
}

TEST(SourceImportsTest, StatementsOnLinesAndAfterSemicolons) {
  using python::PycImport;
  EXPECT_THAT(python::SourceImports("import os, json.decoder as d\n"
                                    "  from collections import (OrderedDict, abc)  # c\n"
                                    "from . import x; from .m import y\n"
                                    "x = 1; import zlib\n"
                                    "text = 'important'\n"
                                    "m = __import__('pkg.sub')\n"),
              ElementsAre(PycImport{"os", {}}, PycImport{"json.decoder", {}},
                          PycImport{"collections", {"OrderedDict", "abc"}}, PycImport{"", {"x"}},
                          PycImport{"m", {"y"}}, PycImport{"zlib", {}}, PycImport{"pkg.sub", {}}));
}

TEST_F(PythonImportWalkTest, BoundedByFilesAndRounds) {
  PythonWalkResult r = Walk({.pycs = {Pyc(lib_ + "/json", "__init__")}}, {.max_files = 3});
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(r.files, 3u);
  r = Walk({.pycs = {Pyc(lib_ + "/json", "__init__")}}, {.max_rounds = 2});
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(rounds_.size(), 2u);
}

TEST(PthImportsTest, ImportLinesOnly) {
  EXPECT_THAT(PthImports("import os; var = 'X'; enabled and __import__('_distutils_hack').add()"),
              ElementsAre("os", "_distutils_hack"));
  EXPECT_THAT(PthImports("import a, b.c"), ElementsAre("a", "b.c"));
  EXPECT_TRUE(PthImports("/usr/local/lib/site").empty());
  EXPECT_TRUE(PthImports("# import x").empty());
  EXPECT_TRUE(PthImports("import").empty());
}

}  // namespace
}  // namespace lazypull::startup
