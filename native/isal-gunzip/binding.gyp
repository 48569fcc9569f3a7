{
  "targets": [
    {
      "target_name": "isal_gunzip",
      "sources": ["gunzip.c"],
      "libraries": ["-lisal"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
