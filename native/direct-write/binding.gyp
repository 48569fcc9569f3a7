{
  "targets": [
    {
      "target_name": "direct_write",
      "sources": ["direct_write.c"],
      "libraries": ["-lpthread"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-pthread"]
    }
  ]
}
