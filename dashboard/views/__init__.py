"""One module per dashboard page; each exposes `render()` for st.Page."""
