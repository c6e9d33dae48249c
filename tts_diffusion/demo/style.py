"""How the page looks: theme, CSS and the one piece of script (bring the status into view).

- The prompt row sticks to the top of the window at every size (gradio's page container
  has `overflow: hidden`, which turns `position: sticky` off; `clip` clips the same
  without making it a scroll container).
- Images keep their pixels sharp when scaled up.
- Candidate captions are two lines, shown in full.
- Below 720 px (a phone) the results column comes before the controls, the best image is
  at most 45 % of the window high, and nothing is wider than the window.
"""
from __future__ import annotations

from typing import Any

#: width below which the page is laid out for a phone
NARROW = 720

CSS = f"""
/* gradio's container clips with overflow: hidden, which turns sticky off; clip does not */
.gradio-container {{ overflow-x: clip !important; overflow-y: visible !important; }}
#prompt-row {{ position: sticky; top: 0; z-index: 20; background: var(--body-background-fill);
  padding: 6px 0; margin: 0 -4px; box-shadow: 0 6px 6px -6px rgba(0, 0, 0, 0.25); }}
#status {{ scroll-margin-top: 160px; min-height: 3.2em; }}
#best-image img, #matte img, #candidates img, #chains img {{ image-rendering: pixelated; }}
#candidates .caption-label, #chains .caption-label {{ white-space: pre-line; overflow: visible; text-overflow: clip;
  max-width: calc(100% - 8px); line-height: 1.25; text-align: left; }}
#candidates .grid-wrap, #chains .grid-wrap {{ height: auto !important; min-height: 0 !important; max-height: none !important; }}
#chains-table ul {{ margin-top: 0; }}
@media (max-width: {NARROW}px) {{
  #header p {{ display: none; }}
  #header h2 {{ font-size: 1.1em; margin: 0; }}
  #prompt-row {{ flex-wrap: nowrap !important; gap: 6px; }}
  #prompt-row > * {{ min-width: 0 !important; }}
  #generate {{ flex: 0 0 auto !important; width: auto !important; padding: 0 14px; }}
  #main {{ flex-direction: column; align-items: stretch !important; }}
  #main > * {{ width: 100% !important; min-width: 0 !important; max-width: 100%; }}
  #results {{ order: -1; }}
  #candidates .grid-container, #chains .grid-container {{ grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }}
  #best-image, #matte {{ height: auto !important; }}
  #best-image .image-frame, #best-image img, #matte img {{ max-height: 45vh; }}
  #best-row {{ flex-wrap: nowrap; }}
  .gradio-container {{ padding-left: 8px !important; padding-right: 8px !important; }}
}}
"""

#: after Generate: bring the status line into view if it is out of sight (a visitor who
#: scrolled down to the controls on a phone)
SHOW_STATUS_JS = """
() => {
  const el = document.getElementById("status");
  if (!el) return;
  const r = el.getBoundingClientRect();
  if (r.top < 0 || r.top > window.innerHeight * 0.5) el.scrollIntoView({block: "start"});
}
"""


def theme(gr: Any) -> Any:
    """The default theme with system fonts (no font download from a CDN)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])
