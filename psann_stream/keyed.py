"""placeholder"""
class KeyedLearner:  # replaced below
    pass
