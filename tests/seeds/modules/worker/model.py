class MLP:
    def params(self):
        return [0.0, 1.0]
