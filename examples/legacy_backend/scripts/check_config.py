"""Print the effective DataForge configuration (an ops helper, not a scheduled job)."""
import json
import os


def main():
    print(json.dumps({k: v for k, v in sorted(os.environ.items()) if k.startswith("DATAFORGE_")}, indent=2))


if __name__ == "__main__":
    main()
