{
  # C++ exceptions stay disabled: node-gyp's common.gypi passes
  # -fno-exceptions and node-addon-api is told not to throw, so every error
  # is a pending JavaScript exception checked by hand (see src/errors.h).
  "targets": [
    {
      "target_name": "ublksnap",
      "sources": [
        "src/addon.cc",
        "src/args.cc",
        "src/blockdev.cc",
        "src/clone.cc",
        "src/copy-range.cc",
        "src/direct-volume.cc",
        "src/errors.cc",
        "src/fiemap.cc",
        "src/files.cc",
        "src/freeze.cc",
        "src/layout-test.cc",
        "src/lease.cc",
        "src/memory.cc",
        "src/open.cc",
        "src/populate.cc",
        "src/thread.cc",
        "src/ublk-control.cc",
        "src/ublk-control-cmd.cc",
        "src/ublk-queue.cc",
        "src/ublk-queue-core.cc",
        "src/ublk-queue-thread.cc",
        "src/ublk-ring.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2"]
    }
  ]
}
