#!/usr/bin/env bash
# Download MS COCO 2017 (images + official annotations) for data/coco.yaml.
#
#   bash data/scripts/get_coco.sh [--no-train] [--test] [--keep-zips] [DIR]
#
# DIR defaults to $ELAN_YOLO_DATASETS/coco, or <repo>/datasets/coco. Result:
#   DIR/annotations/instances_{train,val}2017.json   DIR/train2017/*.jpg   DIR/val2017/*.jpg
# About 19 GiB for train, 1 GiB for val, 6 GiB for test; the zips are deleted after unpacking
# unless --keep-zips. Downloads resume where they stopped (curl -C -).
set -euo pipefail

train=1 test=0 keep=0 dir=""
for arg in "$@"; do
  case "$arg" in
    --no-train) train=0 ;;
    --test) test=1 ;;
    --keep-zips) keep=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "get_coco.sh: unknown option $arg" >&2; exit 2 ;;
    *) dir="$arg" ;;
  esac
done
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${dir:-${ELAN_YOLO_DATASETS:-$repo/datasets}/coco}"
mkdir -p "$dir"
cd "$dir"

base="http://images.cocodataset.org"
zips=("annotations/annotations_trainval2017.zip" "zips/val2017.zip")
[ "$train" = 1 ] && zips+=("zips/train2017.zip")
[ "$test" = 1 ] && zips+=("zips/test2017.zip" "annotations/image_info_test2017.zip")

for path in "${zips[@]}"; do
  zip="$(basename "$path")"
  if [ -f ".$zip.done" ]; then echo "$zip: already unpacked"; continue; fi
  echo "downloading $base/$path -> $dir/$zip"
  curl -fL --retry 3 -C - -o "$zip" "$base/$path"
  unzip -q -o "$zip"  # annotations unpack into annotations/, images into <split>2017/
  touch ".$zip.done"
  [ "$keep" = 1 ] || rm -f "$zip"
done
echo "COCO 2017 is in $dir"
