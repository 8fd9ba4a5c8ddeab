#!/usr/bin/env bash
# Download and unpack COCO 2017 for data/coco.yaml: images, the official annotations (COCO json) and
# YOLOv5's YOLO-format labels (ultralytics release asset coco2017labels.zip).
#
# Usage (from anywhere):
#   bash data/scripts/get_coco.sh                 # train + val images, labels, annotations (~21 GB of zips)
#   bash data/scripts/get_coco.sh --no-train      # val only: enough for val.py (~1.3 GB)
#   bash data/scripts/get_coco.sh --dir /data     # unpack into /data/coco instead
#
# Options:
#   --dir DIR          parent folder; COCO lands in DIR/coco. Default: <repo>/datasets, which is where
#                      data/coco.yaml's `path: ../datasets/coco` points (resolved against data/).
#                      With another DIR, point `path` in data/coco.yaml (or a copy) at DIR/coco.
#   --no-train         skip train2017.zip (19 GB, 118287 images)
#   --no-val           skip val2017.zip (1 GB, 5000 images)
#   --test             also test2017.zip (7 GB, 40670 images; no public labels, for test-dev)
#   --segments         YOLO labels with polygon segments (coco2017labels-segments.zip, 169 MB)
#                      instead of boxes only (coco2017labels.zip, 46 MB)
#   --no-annotations   skip the official annotations_trainval2017.zip (241 MB); the YOLO labels zip
#                      still brings annotations/instances_val2017.json, so val COCO AP works, but
#                      training from train_json does not
#   -h, --help         this text
#
# Result (with the defaults):
#   DIR/coco/images/{train2017,val2017}/*.jpg        118287 and 5000 images
#   DIR/coco/labels/{train2017,val2017}/*.txt        117266 and 4952 label files (images without any
#                                                    object have none: 1021 train, 48 val backgrounds)
#   DIR/coco/{train2017,val2017,test-dev2017}.txt    image lists used by data/coco.yaml
#   DIR/coco/annotations/instances_{train,val}2017.json
#
# Needs curl and unzip, and about 45 GB free while unpacking (zips are deleted once unpacked).
# Re-running is safe: finished parts are skipped (DIR/coco/.get_coco/*.done), an interrupted
# download resumes from its .part file, and an interrupted unzip is redone from the kept zip.
set -euo pipefail
trap 'echo "get_coco.sh: failed at line $LINENO; rerun the same command to resume" >&2' ERR

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$repo_root/datasets"
train=true val=true test=false segments=false annotations=true
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dir) [ "$#" -ge 2 ] || { echo "get_coco.sh: --dir needs a folder" >&2; exit 2; }; dir="$2"; shift ;;
    --no-train) train=false ;;
    --no-val) val=false ;;
    --test) test=true ;;
    --segments) segments=true ;;
    --no-annotations) annotations=false ;;
    -h | --help) usage; exit 0 ;;
    *) echo "get_coco.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in curl unzip; do
  command -v "$tool" > /dev/null || { echo "get_coco.sh: '$tool' is required but not installed" >&2; exit 1; }
done

coco="$dir/coco"
state="$coco/.get_coco"  # zips being fetched and the .done markers of finished parts
mkdir -p "$state" "$coco/images"

# fetch URL ZIP: download to ZIP (resuming ZIP.part), unless ZIP is already complete
fetch() {
  local url="$1" zip="$2"
  if [ -f "$zip" ]; then return 0; fi
  echo "Downloading $url"
  # -f: an HTTP error is a failure, not a saved error page; -C -: resume a partial .part file
  curl -fL --retry 5 --retry-delay 10 --retry-connrefused -C - -# -o "$zip.part" "$url"
  mv "$zip.part" "$zip"
}

# part NAME URL DEST: fetch the zip at URL and unpack it into DEST, once
part() {
  local name="$1" url="$2" dest="$3"
  local zip="$state/$name"
  if [ -f "$state/$name.done" ]; then echo "$name: already done, skipped"; return 0; fi
  fetch "$url" "$zip"
  echo "Unzipping $name into $dest"
  unzip -q -o "$zip" -d "$dest"  # -o: a rerun after an interrupted unzip overwrites its partial files
  rm -f "$zip"
  touch "$state/$name.done"
}

labels_url=https://github.com/ultralytics/assets/releases/download/v0.0.0
images_url=http://images.cocodataset.org/zips
annotations_url=http://images.cocodataset.org/annotations
if [ "$segments" = true ]; then labels_zip=coco2017labels-segments.zip; else labels_zip=coco2017labels.zip; fi

# Labels first: the zip holds coco/labels, the image lists and annotations/instances_val2017.json.
part "$labels_zip" "$labels_url/$labels_zip" "$dir"
# Then the official json (the same instances_val2017.json, overwritten by the official copy).
if [ "$annotations" = true ]; then
  part annotations_trainval2017.zip "$annotations_url/annotations_trainval2017.zip" "$coco"
fi
if [ "$val" = true ]; then part val2017.zip "$images_url/val2017.zip" "$coco/images"; fi
if [ "$train" = true ]; then part train2017.zip "$images_url/train2017.zip" "$coco/images"; fi
if [ "$test" = true ]; then part test2017.zip "$images_url/test2017.zip" "$coco/images"; fi

# check count of files in a folder against COCO 2017's published numbers
check() {
  local what="$1" folder="$2" pattern="$3" expected="$4" found=0
  if [ -d "$folder" ]; then found=$(find "$folder" -maxdepth 1 -name "$pattern" | wc -l); fi
  if [ "$found" -eq "$expected" ]; then
    echo "ok: $found $what in $folder"
  else
    echo "WARNING: $found $what in $folder, expected $expected (incomplete download? rerun this script)" >&2
    status=1
  fi
}
status=0
if [ "$val" = true ]; then
  check images "$coco/images/val2017" '*.jpg' 5000
  check labels "$coco/labels/val2017" '*.txt' 4952
fi
if [ "$train" = true ]; then
  check images "$coco/images/train2017" '*.jpg' 118287
  check labels "$coco/labels/train2017" '*.txt' 117266
fi
if [ "$test" = true ]; then check images "$coco/images/test2017" '*.jpg' 40670; fi
echo "COCO 2017 is in $coco"
exit "$status"
