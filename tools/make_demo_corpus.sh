#!/usr/bin/env bash
# Regenerate the embedded Swedish demo corpus (qwen_swe/demo_corpus/) with espeak-ng and sox (Debian packages
# espeak-ng and sox). The committed corpus was made with this script; the demo and the tests never run it.
# Four synthetic "speakers" (espeak-ng voice variants and pitches) read Swedish sentences; FLAC, 24 kHz mono.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/qwen_swe/demo_corpus"
sentences="$out/sentences.txt"
speakers=("m3:45" "f2:60" "m1:35" "f4:70")  # variant:pitch
mkdir -p "$out/audio"
: > "$out/manifest.jsonl"
i=0
while IFS= read -r line; do
  [ -z "$line" ] && continue
  spk_index=$(( i % ${#speakers[@]} ))
  IFS=: read -r variant pitch <<< "${speakers[$spk_index]}"
  key=$(printf "spk%d_%03d" "$spk_index" "$i")
  espeak-ng -v "sv+$variant" -p "$pitch" -s 150 -w "$out/audio/$key.tmp.wav" "$line"
  sox "$out/audio/$key.tmp.wav" -r 24000 -c 1 -b 16 "$out/audio/$key.flac"
  rm "$out/audio/$key.tmp.wav"
  python3 -c 'import json,sys; print(json.dumps({"audio": f"audio/{sys.argv[1]}.flac", "text": sys.argv[2], "speaker": sys.argv[3], "language": "swedish"}, ensure_ascii=False))' \
    "$key" "$line" "spk$spk_index" >> "$out/manifest.jsonl"
  i=$((i + 1))
done < "$sentences"
echo "wrote $i utterances to $out"
