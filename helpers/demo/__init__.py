"""The bundled demo dataset: its generator (generate, ``python -m helpers.demo.generate``), the question
types it draws from (templates, data only) and the teacher-vs-student demo table (report). Not imported
by any stage.
"""
