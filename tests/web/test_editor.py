"""The editor in real headless Chromium against a real server with a tiny SD1 checkpoint."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from tests.web.editor import Editor

DEFAULT_TYPES = {3: "KSampler", 4: "CheckpointLoaderSimple", 5: "EmptyLatentImage", 6: "CLIPTextEncode",
                 7: "CLIPTextEncode", 8: "VAEDecode", 9: "SaveImage"}
# (source id, output slot, target id, input name) of ComfyUI's default graph
DEFAULT_LINKS = {(4, 0, 3, "model"), (6, 0, 3, "positive"), (7, 0, 3, "negative"), (5, 0, 3, "latent_image"),
                 (4, 1, 6, "clip"), (4, 1, 7, "clip"), (3, 0, 8, "samples"), (4, 2, 8, "vae"), (8, 0, 9, "images")}


def named_links(graph: dict) -> set[tuple[int, int, int, str]]:
    inputs = {n["id"]: n["inputs"] for n in graph["nodes"]}
    return {(origin, slot, target, inputs[target][target_slot]["name"])
            for _, origin, slot, target, target_slot, _ in graph["links"]}


def make_small(editor: Editor, latent: int, sampler: int, steps: int = 2) -> None:
    """Shrink a txt2img graph to 64x64 and a few steps through the widgets' own dialogs."""
    editor.set_number(latent, "width", 64)
    editor.set_number(latent, "height", 64)
    editor.set_number(sampler, "steps", steps)


def test_page_opens_with_the_default_graph_on_the_first_checkpoint(editor: Editor) -> None:
    editor.snap("default_graph")
    graph = editor.graph()
    assert {n["id"]: n["type"] for n in graph["nodes"]} == DEFAULT_TYPES
    assert named_links(graph) == DEFAULT_LINKS
    loader = editor.node(4)
    assert loader["widgets"]["ckpt_name"] == "tiny-sd1.safetensors"
    sampler = editor.node(3)["widgets"]
    assert sampler["steps"] == 20 and sampler["cfg"] == 8 and sampler["sampler_name"] == "euler"
    assert sampler["control_after_generate"] == "randomize"
    assert editor.node(6)["widgets"]["text"].startswith("beautiful scenery")
    # typed sockets: widget inputs carry their widget, optional/forced ones are plain sockets
    seed = next(i for i in editor.node(3)["inputs"] if i["name"] == "seed")
    assert seed == {"name": "seed", "type": "INT", "link": None, "widget": "seed"}
    assert editor.page.locator("#workflow-name").inner_text() == "Default txt2img"


def test_default_graph_takes_size_and_prompt_from_the_checkpoint_metadata(editor: Editor) -> None:
    from safetensors.numpy import load_file, save_file

    folder = editor.base / "models" / "checkpoints"
    hinted = folder / "aa-hinted.safetensors"  # sorts first, so the default graph picks it
    save_file(load_file(str(folder / "tiny-sd1.safetensors")), str(hinted),
              metadata={"modelspec.resolution": "64x64", "diffloom.example_prompt": "a blue square"})
    try:
        editor.js("() => sessionStorage.clear()")
        editor.page.reload()
        editor.page.wait_for_selector("body[data-ready=true]")
        assert editor.node(4)["widgets"]["ckpt_name"] == "aa-hinted.safetensors"
        latent = editor.node(5)["widgets"]
        assert (latent["width"], latent["height"]) == (64, 64)
        assert editor.node(6)["widgets"]["text"] == "a blue square"
        assert editor.node(7)["widgets"]["text"] == "text, watermark"
    finally:
        hinted.unlink()


def test_build_the_default_graph_from_an_empty_canvas_and_run_it(editor: Editor) -> None:
    editor.page.click("#btn-new")
    assert editor.graph()["nodes"] == []
    assert editor.js("() => window.diffloom.canvas.ds.scale") == 1
    editor.page.click("#btn-zoom-out")
    editor.page.click("#btn-zoom-out")  # room for seven nodes on a laptop screen
    assert abs(editor.js("() => window.diffloom.canvas.ds.scale") - 0.64) < 0.01
    width = editor.js("() => window.diffloom.canvasElement.getBoundingClientRect().width")
    left, top = editor.js("() => { const r = window.diffloom.canvasElement.getBoundingClientRect();"
                          " return [r.left, r.top]; }")
    place = lambda fx, fy: (left + width * fx, top + 800 * fy)  # noqa: E731
    loader = editor.add_node("checkpoint", "CheckpointLoaderSimple", place(0.03, 0.45))
    positive = editor.add_node("clip text", "CLIPTextEncode", place(0.3, 0.08))
    negative = editor.add_node("cliptextencode", "CLIPTextEncode", place(0.3, 0.42))
    latent = editor.add_node("empty latent", "EmptyLatentImage", place(0.3, 0.75))
    sampler = editor.add_node("ksampler", "KSampler", place(0.57, 0.08))
    decode = editor.add_node("vae decode", "VAEDecode", place(0.8, 0.08))
    save = editor.add_node("save image", "SaveImage", place(0.8, 0.3))
    editor.snap("nodes_added")
    for source, slot, target, name in [(loader, 0, sampler, "model"), (loader, 1, positive, "clip"),
                                       (loader, 1, negative, "clip"), (positive, 0, sampler, "positive"),
                                       (negative, 0, sampler, "negative"), (latent, 0, sampler, "latent_image"),
                                       (sampler, 0, decode, "samples"), (loader, 2, decode, "vae"),
                                       (decode, 0, save, "images")]:
        editor.connect(source, slot, target, name)
    editor.snap("connected")
    ids = {"4": loader, "6": positive, "7": negative, "5": latent, "3": sampler, "8": decode, "9": save}
    expected = {(ids[str(s)], slot, ids[str(t)], name) for s, slot, t, name in DEFAULT_LINKS}
    assert named_links(editor.graph()) == expected
    editor.set_text(positive, "text", "a red bottle")
    editor.set_text(negative, "text", "text, watermark")
    make_small(editor, latent, sampler, steps=3)
    assert editor.node(positive)["widgets"]["text"] == "a red bottle"
    assert editor.node(loader)["widgets"]["ckpt_name"] == "tiny-sd1.safetensors"
    seed_before = editor.node(sampler)["widgets"]["seed"]

    editor.js("""() => { window.__seen = {progress: [], previews: 0, executing: []};
        const api = window.diffloom.api;
        api.addEventListener('progress', (e) => window.__seen.progress.push([e.detail.value, e.detail.max,
            document.querySelector('#progress .label').textContent]));
        api.addEventListener('preview', () => window.__seen.previews++);
        api.addEventListener('executing', (e) => window.__seen.executing.push(e.detail.node)); }""")
    editor.queue()
    editor.page.wait_for_function("(id) => window.diffloom.graph.getNodeById(id).imageUrls?.length", arg=save,
                                  timeout=90_000)
    editor.wait_idle()
    editor.snap("finished")
    seen = editor.js("() => window.__seen")
    assert [p[:2] for p in seen["progress"]] == [[1, 3], [2, 3], [3, 3]]
    assert all("KSampler" in p[2] for p in seen["progress"])  # the progress bar named the sampler
    assert seen["previews"] >= 1
    assert str(sampler) in seen["executing"] and str(save) in seen["executing"]
    # the seed moved on after queueing (control_after_generate = randomize)
    assert editor.node(sampler)["widgets"]["seed"] != seed_before
    image_url = editor.node(save)["images"][0]
    assert "/api/view?" in image_url and "type=output" in image_url
    size = editor.js("""async (url) => { const img = new Image(); img.src = url; await img.decode();
        return [img.naturalWidth, img.naturalHeight]; }""", image_url)
    assert size == [64, 64]
    assert editor.page.locator("#gallery img").count() == 1
    editor.page.click("#sidebar [aria-controls=panel-history]")
    editor.page.locator("#history-list .history-item.success img.thumb").first.wait_for()


def test_links_of_the_wrong_type_are_refused(editor: Editor) -> None:
    links_before = editor.graph()["links"]
    # MODEL output of the loader onto the CLIP input of a text encoder, and onto the VAE input of the decoder
    editor.connect(4, 0, 6, "clip")
    editor.connect(4, 0, 8, "vae")
    # LATENT onto an INT widget socket (steps)
    editor.connect(5, 0, 3, "steps")
    editor.snap("after_wrong_links")
    assert editor.graph()["links"] == links_before
    # the right type on the same input replaces the old link
    editor.connect(4, 2, 8, "vae")
    assert (4, 2, 8, "vae") in named_links(editor.graph())


def test_the_canvas_menu_adds_nodes_by_category(editor: Editor) -> None:
    page = editor.page
    page.mouse.click(*editor.empty_spot(), button="right")
    page.locator(".litecontextmenu .litemenu-entry", has_text="Add Node").first.click()
    page.locator(".litecontextmenu .litemenu-entry", has_text="latent").first.click()
    page.locator(".litecontextmenu .litemenu-entry", has_text="Upscale Latent By").first.click()
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 8")
    added = editor.nodes_of_type("LatentUpscaleBy")
    assert len(added) == 1 and added[0]["title"] == "Upscale Latent By"
    editor.connect(5, 0, added[0]["id"], "samples")
    assert (5, 0, added[0]["id"], "samples") in named_links(editor.graph())


def test_widgets_edit_with_arrows_prompt_combo_and_convert_to_input(editor: Editor) -> None:
    page = editor.page
    page.mouse.click(*editor.widget_pos(3, "steps", "right"))
    assert editor.node(3)["widgets"]["steps"] == 21
    page.mouse.click(*editor.widget_pos(3, "cfg", "left"))
    assert editor.node(3)["widgets"]["cfg"] == 7.9
    editor.set_number(5, "width", 99)  # snapped to the step of 8
    assert editor.node(5)["widgets"]["width"] == 96
    editor.set_number(3, "steps", 0)  # below min 1
    assert editor.node(3)["widgets"]["steps"] == 1
    page.mouse.click(*editor.widget_pos(3, "sampler_name"))
    page.locator(".litecontextmenu .litemenu-entry", has_text="dpmpp_2m").first.click()
    assert editor.node(3)["widgets"]["sampler_name"] == "dpmpp_2m"
    page.mouse.click(*editor.widget_pos(3, "control_after_generate"))
    page.locator(".litecontextmenu .litemenu-entry", has_text="fixed").first.click()
    assert editor.node(3)["widgets"]["control_after_generate"] == "fixed"
    editor.snap("widgets_set")


def test_save_then_open_gives_the_same_graph(editor: Editor, tmp_path: Path) -> None:
    page = editor.page
    editor.set_number(3, "steps", 7)
    editor.set_text(7, "text", "blurry")
    before = editor.saved_form()
    with page.expect_download() as download_info:
        page.click("#btn-save")
        page.locator(".dialog input.text").fill("my graph")
        page.locator(".dialog button.primary").click()
    saved = tmp_path / "saved.json"
    download_info.value.save_as(saved)
    assert download_info.value.suggested_filename == "my graph.json"
    data = json.loads(saved.read_text())
    assert data["version"] == 0.4
    sampler = next(n for n in data["nodes"] if n["id"] == 3)
    assert isinstance(sampler["widgets_values"], dict)
    assert sampler["widgets_values"]["steps"] == 7 and sampler["widgets_values"]["sampler_name"] == "euler"
    page.click("#btn-new")
    assert editor.graph()["nodes"] == []
    page.set_input_files("#file-input", str(saved))
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 7")
    editor.snap("reopened")
    after = editor.saved_form()
    assert after == before
    assert editor.node(7)["widgets"]["text"] == "blurry"
    assert page.locator("#workflow-name").inner_text() == "saved"


def test_a_png_with_an_embedded_workflow_loads_by_drop(editor: Editor) -> None:
    # a PNG carrying only an API-format prompt, as a script might write it
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 64, "batch_size": 1}},
        "2": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["1", 0], "upscale_method": "bicubic",
                                                           "scale_by": 2.0}},
    }
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "PNG", pnginfo=info)
    drop_file(editor, "api_prompt.png", "image/png", buffer.getvalue())
    editor.page.wait_for_function("() => window.diffloom.graph.nodes.length === 2")
    editor.snap("png_api_loaded")
    graph = editor.graph()
    assert sorted(n["type"] for n in graph["nodes"]) == ["EmptyLatentImage", "LatentUpscaleBy"]
    upscale = editor.nodes_of_type("LatentUpscaleBy")[0]
    assert upscale["widgets"] == {"upscale_method": "bicubic", "scale_by": 2.0}
    assert editor.nodes_of_type("EmptyLatentImage")[0]["widgets"]["width"] == 128
    assert len(graph["links"]) == 1


def test_rerun_marks_cached_nodes_history_reloads_and_its_png_carries_the_workflow(editor: Editor) -> None:
    page = editor.page
    editor.js("() => { window.__runs = []; window.diffloom.api.addEventListener('execution_start',"
              " (e) => window.__runs.push(e.detail.prompt_id)); }")
    make_small(editor, 5, 3)
    editor.set_text(6, "text", "png roundtrip")
    page.mouse.click(*editor.widget_pos(3, "control_after_generate"))
    page.locator(".litecontextmenu .litemenu-entry", has_text="fixed").first.click()
    editor.queue()
    page.wait_for_function("() => window.diffloom.graph.getNodeById(9).imageUrls?.length", timeout=90_000)
    editor.wait_idle()
    # the same graph again: everything upstream of the sampler comes from the cache and is marked so
    editor.set_text(7, "text", "watermark, text")
    editor.queue()
    page.wait_for_function("() => window.__runs.length === 2 && window.diffloom.execution.cached.has('4')",
                           timeout=60_000)
    editor.wait_idle()
    cached = set(editor.js("() => [...window.diffloom.execution.cached]"))
    assert {"4", "5", "6"} <= cached and "7" not in cached and "3" not in cached
    editor.snap("cached_marks")
    first_run, second_run = editor.js("() => window.__runs")
    # history: the first run loads back into the canvas
    page.click("#sidebar [aria-controls=panel-history]")
    row = page.locator(f"#history-list .history-item.success[data-prompt-id='{first_run}']")
    row.wait_for()
    page.locator(f"#history-list .history-item.success[data-prompt-id='{second_run}'] img.thumb").wait_for()
    page.click("#btn-new")
    row.locator("button.load").click()
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 7")
    assert editor.node(7)["widgets"]["text"] == "text, watermark"
    assert editor.node(6)["widgets"]["text"] == "png roundtrip"
    # the PNG of the second run, dropped on an empty canvas, brings its workflow back
    image = editor.api(f"/api/history/{second_run}")[second_run]["outputs"]["9"]["images"][0]
    url = f"/api/view?filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}"
    png = editor.js("async (url) => Array.from(new Uint8Array(await (await fetch(url)).arrayBuffer()))", url)
    page.click("#btn-new")
    drop_file(editor, "result.png", "image/png", bytes(png))
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 7")
    editor.snap("png_loaded")
    assert editor.node(6)["widgets"]["text"] == "png roundtrip"
    assert editor.node(7)["widgets"]["text"] == "watermark, text"
    assert editor.node(5)["widgets"]["width"] == 64
    assert named_links(editor.graph()) == DEFAULT_LINKS


def test_a_validation_error_is_shown_on_its_node_and_input(editor: Editor) -> None:
    editor.expect_http_error("/api/prompt", 400)
    page = editor.page
    # remove the Empty Latent Image node: the sampler's latent_image input is left unconnected
    page.mouse.click(*editor.title_pos(5))
    page.keyboard.press("Delete")
    assert not editor.nodes_of_type("EmptyLatentImage")
    editor.queue()
    panel = page.locator("#errors")
    panel.wait_for()
    editor.snap("validation_error")
    assert "latent_image" in panel.inner_text()
    assert "KSampler #3" in panel.inner_text()
    sampler = editor.node(3)
    assert sampler["hasErrors"]
    assert editor.js("() => window.diffloom.graph.getNodeById(3).inputs.find((i) => i.name === 'latent_image')"
                     ".hasErrors") is True
    assert editor.js("() => window.diffloom.execution.errors.get('3')[0].input") == "latent_image"
    assert editor.api("/api/queue") == {"queue_running": [], "queue_pending": []}
    # the error list jumps to the node
    panel.locator("button.link").first.click()
    assert editor.js("() => Object.keys(window.diffloom.canvas.selected_nodes)") == ["3"]
    # undo brings the node back; queueing again clears the marks
    page.keyboard.press("Control+z")
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 7")


def test_a_queued_prompt_can_be_cancelled_and_a_running_one_stopped(editor: Editor) -> None:
    page = editor.page
    editor.set_number(5, "width", 64)
    editor.set_number(5, "height", 64)
    editor.set_number(3, "steps", 400)
    page.fill("#batch-count", "2")
    editor.queue()
    page.click("#sidebar [aria-controls=panel-queue]")
    pending = page.locator("#queue-list .queue-item.pending")
    pending.wait_for()
    page.locator("#queue-list .queue-item.running").wait_for()
    editor.snap("queue_with_pending")
    pending_id = pending.get_attribute("data-prompt-id")
    pending.locator("button.cancel").click()
    pending.wait_for(state="detached")
    queue = editor.api("/api/queue")
    assert [item[1] for item in queue["queue_pending"]] == []
    assert pending_id not in json.dumps(queue)
    running = page.locator("#queue-list .queue-item.running")
    running.locator("button.cancel").click()
    editor.wait_idle()
    page.locator("#queue-list .empty").wait_for()
    history = editor.api("/api/history")
    assert pending_id not in history
    statuses = [entry["status"]["status_str"] for entry in history.values()
                if entry["prompt"][2]["3"]["inputs"].get("steps") == 400]
    assert statuses == ["error"]  # interrupted


def test_workflow_list_opens_a_comfyui_file(editor: Editor) -> None:
    page = editor.page
    page.click("#btn-workflows")
    item = page.locator("#workflow-menu .menu-item", has_text="latent_upscale.json")
    item.click()
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 2")
    latent = editor.node(1)
    assert latent["widgets"] == {"width": 96, "height": 80, "batch_size": 2}
    assert editor.node(2)["widgets"] == {"upscale_method": "bilinear", "scale_by": 1.5}
    assert named_links(editor.graph()) == {(1, 0, 2, "samples")}
    assert page.locator("#workflow-name").inner_text() == "latent_upscale"


def test_undo_redo_copy_paste_group_and_delete(editor: Editor) -> None:
    page = editor.page
    page.mouse.click(*editor.title_pos(5))
    page.keyboard.press("Control+c")
    page.mouse.move(*editor.empty_spot())
    page.keyboard.press("Control+v")
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 8")
    page.keyboard.press("Control+z")
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 7")
    page.keyboard.press("Control+y")
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 8")
    # group the selected node
    page.mouse.click(*editor.title_pos(3))
    page.keyboard.press("Control+g")
    assert len(editor.graph()["groups"]) == 1
    # moving a node is undoable too
    x, y = editor.node(9)["pos"]
    start = editor.title_pos(9)
    editor.drag(start, (start[0] + 60, start[1] + 40))
    assert editor.node(9)["pos"] != [x, y]
    page.click("#btn-undo")
    assert editor.node(9)["pos"] == [x, y]
    # mute (Ctrl+M) and bypass (Ctrl+B) the decoder: ComfyUI's modes 2 and 4, toggled
    page.mouse.click(*editor.title_pos(8))
    page.keyboard.press("Control+m")
    assert editor.node(8)["mode"] == 2
    page.keyboard.press("Control+b")
    assert editor.node(8)["mode"] == 4
    page.keyboard.press("Control+b")
    assert editor.node(8)["mode"] == 0
    page.keyboard.press("Control+m")
    editor.snap("muted")
    exported = editor.js("async () => window.diffloom.api.convertWorkflow(window.diffloom.snapshot())")
    assert "8" not in exported and "3" in exported
    page.mouse.click(*editor.title_pos(9))
    page.keyboard.press("Delete")
    assert not editor.nodes_of_type("SaveImage")
    editor.snap("after_edits")
    # the session survives a reload of the page
    before = editor.saved_form()
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert editor.saved_form() == before


def test_load_image_upload_by_button_and_drop(editor: Editor) -> None:
    page = editor.page
    page.click("#btn-new")
    node = editor.add_node("load image", "LoadImage")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buffer, "PNG")
    with page.expect_file_chooser() as chooser:
        page.mouse.click(*editor.widget_pos(node, "choose file to upload"))
    chooser.value.set_files(files=[{"name": "green.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    page.wait_for_function("(id) => window.diffloom.graph.getNodeById(id).widgets[0].value === 'green.png'", arg=node)
    assert (editor.base / "input" / "green.png").read_bytes() == buffer.getvalue()
    assert "filename=green.png" in editor.node(node)["images"][0]
    blue = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 30, 200)).save(blue, "PNG")
    drop_file(editor, "blue.png", "image/png", blue.getvalue(), at=editor.title_pos(node))
    page.wait_for_function("(id) => window.diffloom.graph.getNodeById(id).widgets[0].value === 'blue.png'", arg=node)
    assert (editor.base / "input" / "blue.png").exists()
    editor.snap("uploaded")
    # the mask painter: paint a stroke, save; the server stores the image with the stroke as transparency
    page.mouse.click(*editor.title_pos(node), button="right")
    page.locator(".litecontextmenu .litemenu-entry", has_text="Edit mask").click()
    paint = page.locator(".mask-editor canvas.mask-paint")
    box = paint.bounding_box()
    assert box is not None
    editor.drag((box["x"] + 2, box["y"] + 2), (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2))
    editor.snap("mask_painted")
    page.locator(".mask-editor button.primary").click()
    page.wait_for_function("(id) => window.diffloom.graph.getNodeById(id).widgets[0].value === 'blue-mask.png'",
                           arg=node)
    masked = Image.open(editor.base / "input" / "blue-mask.png")
    assert masked.mode == "RGBA" and masked.size == (16, 12)
    assert masked.getpixel((0, 0))[3] == 0 and masked.getpixel((15, 11))[3] == 255
    assert masked.getpixel((15, 11))[:3] == (10, 30, 200)


def drop_file(editor: Editor, name: str, mime: str, data: bytes, at: tuple[float, float] | None = None) -> None:
    """Drop a file on the canvas with a real DataTransfer, as a person dragging it from the desktop."""
    x, y = at or editor.empty_spot()
    editor.js("""([name, mime, bytes, x, y]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
        const target = document.elementFromPoint(x, y);
        for (const type of ['dragenter', 'dragover', 'drop']) {
          target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, clientX: x, clientY: y, bubbles: true,
                                                     cancelable: true }));
        }
    }""", [name, mime, list(data), x, y])


def test_an_execution_error_is_shown_on_the_failing_node(editor: Editor) -> None:
    page = editor.page
    make_small(editor, 5, 3)
    page.mouse.click(*editor.widget_pos(4, "ckpt_name"))
    page.locator(".litecontextmenu .litemenu-entry", has_text="zz-broken.safetensors").click()
    editor.queue()
    panel = page.locator("#errors")
    panel.wait_for()
    editor.wait_idle()
    editor.snap("execution_error")
    assert "failed while running" in panel.inner_text()
    assert "Load Checkpoint #4" in panel.inner_text()
    assert "zz-broken.safetensors" in panel.inner_text()
    assert editor.node(4)["hasErrors"] and not editor.node(3)["hasErrors"]
    assert "zz-broken.safetensors" in editor.js("() => window.diffloom.execution.errors.get('4')[0].text")
    panel.locator("summary").click()  # the traceback is there, folded
    assert panel.locator("pre").inner_text().strip()


def test_a_primitive_turns_a_widget_into_an_input(editor: Editor) -> None:
    page = editor.page
    page.keyboard.press("/")
    box = page.locator(".litesearchbox input")
    box.wait_for()
    box.type("primitive")
    box.press("Enter")
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 8")
    primitive = max(n["id"] for n in editor.graph()["nodes"])
    assert editor.node(primitive)["type"] == "PrimitiveNode"
    editor.connect(primitive, 0, 3, "model")  # a widget-only source: a MODEL socket refuses it
    assert editor.node(3)["inputs"][0]["link"] != None  # noqa: E711 - still the loader's link
    assert not editor.node(primitive)["outputs"][0]["links"]
    editor.connect(primitive, 0, 3, "seed")
    seed_input = next(i for i in editor.node(3)["inputs"] if i["name"] == "seed")
    assert seed_input["link"] is not None
    node = editor.node(primitive)
    assert node["outputs"][0]["type"] == "INT"
    assert node["widgets"] == {"seed": 156680208700286, "control_after_generate": "randomize"}
    assert editor.js("() => window.diffloom.graph.getNodeById(3).widgets.find((w) => w.name === 'seed')"
                     ".computedDisabled") is True
    editor.set_number(primitive, "seed", 1234)
    editor.snap("primitive_linked")
    # the server resolves the primitive into the sampler's literal seed
    with page.expect_download() as download_info:
        page.click("#btn-export")
    exported = json.loads(Path(download_info.value.path()).read_text())
    assert exported["3"]["inputs"]["seed"] == 1234
    assert str(primitive) not in exported
    assert download_info.value.suggested_filename == "Default_txt2img_api.json"
    # saved and reopened, the primitive keeps its value and its link
    saved = editor.saved_form()
    editor.page.click("#btn-new")
    editor.js("(data) => window.diffloom.loadWorkflowData(data, 'again')", saved)
    assert editor.node(primitive)["widgets"]["seed"] == 1234
    assert editor.saved_form() == saved
