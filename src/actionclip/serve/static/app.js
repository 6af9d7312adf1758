// The page of `actionclip serve`: one upload, labels from the box or a ready list, a ranked bar chart.
"use strict";

const $ = (id) => document.getElementById(id);
let labelSets = {};

function apiHeaders() {
  const key = $("api-key").value;
  return key ? { "X-API-Key": key } : {};
}

function labelsFromBox() {
  const text = $("labels").value.trim();
  const parts = text.includes("\n") ? text.split("\n") : text.split(",");
  return parts.map((label) => label.trim()).filter((label) => label);
}

function showStatus(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

function render(result) {
  $("output").hidden = false;
  $("video-name").textContent = result.video;
  $("warning").hidden = !result.warning;
  $("warning").textContent = result.warning || "";
  const list = $("results");
  list.replaceChildren();
  result.labels.forEach((label, i) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * result.scores[i]).toFixed(1)}%`;
    track.append(fill);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${(100 * result.scores[i]).toFixed(1)}%`;
    item.append(name, track, score);
    list.append(item);
  });
  const frames = $("frames");
  frames.replaceChildren();
  (result.thumbnails || []).forEach((uri, i) => {
    const image = document.createElement("img");
    image.src = uri;
    image.alt = `sampled frame ${i + 1}`;
    frames.append(image);
  });
}

async function classify(event) {
  event.preventDefault();
  const file = $("video").files[0];
  if (!file) return showStatus("Choose a video first.", true);
  const labels = labelsFromBox();
  const form = new FormData();
  form.append("video", file, file.name);
  if (labels.length) form.append("labels", JSON.stringify(labels));
  form.append("top_k", $("top-k").value || "5");
  if ($("views").value) form.append("views", $("views").value);
  form.append("thumbnails", "true");
  $("submit").disabled = true;
  showStatus(`Classifying ${file.name}...`, false);
  try {
    const response = await fetch("/v1/classify", { method: "POST", body: form, headers: apiHeaders() });
    const answer = await response.json();
    const result = answer.results && answer.results[0];
    if (!response.ok || !result || result.error) {
      showStatus((result && result.error) || answer.detail || `error ${response.status}`, true);
      $("output").hidden = true;
      return;
    }
    render(result);
    showStatus("", false);
  } catch (error) {
    showStatus(`The server could not be reached: ${error}`, true);
  } finally {
    $("submit").disabled = false;
  }
}

async function loadLabelSets() {
  const response = await fetch("/v1/label-sets", { headers: apiHeaders() });
  if (!response.ok) return;
  const answer = await response.json();
  labelSets = answer.labels;
  const select = $("label-set");
  select.replaceChildren(select.options[0]);
  for (const [name, title] of Object.entries(answer.names)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = `${title} (${labelSets[name].length})`;
    select.append(option);
  }
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: apiHeaders() });
  if (!response.ok) return;
  const model = await response.json();
  $("model").textContent = `${model.model_name || model.arch}, ${model.visual_prompt}, ${model.frames} frames, ${model.precision} on ${model.device}`;
  if (model.default_labels && !$("labels").value) $("labels").placeholder = model.default_labels.join("\n");
}

async function start() {
  const health = await (await fetch("/v1/health")).json();
  $("key-row").hidden = !health.api_key_required;
  $("api-key").addEventListener("change", () => { loadLabelSets(); loadModel(); });
  await Promise.all([loadLabelSets(), loadModel()]);
}

$("label-set").addEventListener("change", (event) => {
  const labels = labelSets[event.target.value];
  if (labels) $("labels").value = labels.join("\n");
});
$("labels").addEventListener("input", () => { $("label-set").value = ""; });
$("form").addEventListener("submit", classify);
const drop = $("drop");
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  if (event.dataTransfer.files.length) {
    $("video").files = event.dataTransfer.files;
    $("drop-text").textContent = event.dataTransfer.files[0].name;
  }
});
$("video").addEventListener("change", () => {
  if ($("video").files[0]) $("drop-text").textContent = $("video").files[0].name;
});
start();
