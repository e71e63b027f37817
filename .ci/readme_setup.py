"""Print the commands of the README's '## Set up' code block, one per line (CI runs exactly these)."""
import re
import sys

text = open(sys.argv[1]).read()
block = re.search(r"^## Set up\n.*?```\n(.*?)```", text, re.S | re.M)
if block is None:
    sys.exit("README has no '## Set up' code block")
for line in block.group(1).splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
        print(line.strip())
