"""The Streamlit app's own code (``streamlit run app.py``): everything the pages use but
the drawing itself.

- :mod:`.analysis`: one scan -> segmentation, metrics, volumes, clinical indices, downloads;
- :mod:`.viz`: the Plotly figures;
- :mod:`.jobs`: training runs as background processes (start, watch, stop);
- :mod:`.catalog`: model cards of the usable weights;
- :mod:`.sidebar`, :mod:`.caching`, :mod:`.ui`: the shared sidebar, cached models and
  samples, one-line errors.

Imports :mod:`lvseg_core`, never the reverse; the page scripts in ``app_pages/`` only draw.
"""
