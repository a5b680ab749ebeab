"""The data-path benchmark's JSON (pytest-benchmark) as a Markdown table of images/s."""

import json
import sys

data = json.load(open(sys.argv[1]))
print("| data path | images/s (median round) | rounds | batch |")
print("|---|---|---|---|")
for bench in data["benchmarks"]:
    info = bench["extra_info"]
    name = bench["name"].removeprefix("test_loader_images_per_sec")
    print(f"| {name} | {info['images_per_sec']:,.0f} | {bench['stats']['rounds']} | {info['batch_size']} |")
