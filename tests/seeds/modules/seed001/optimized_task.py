# Seed 001, "Performance Optimization", with only the import line changed. The seed
# leaves the helpers to the user; here they record what the task chose.
from shoal.runtime import Task


class OptimizedTask(Task):
    def run(self):
        # Check available resources
        resources = self.local.get_resources()

        # Adapt computation to available resources
        if resources.gpu_available:
            batch_size = self.calculate_gpu_batch_size(resources.gpu_memory)
            device = "cuda"
        else:
            batch_size = self.calculate_cpu_batch_size(resources.cpu_memory)
            device = "cpu"

        # Execute with optimized settings
        self.process_data(batch_size=batch_size, device=device)

    def calculate_gpu_batch_size(self, gpu_memory):
        return max(1, gpu_memory // 2**28)

    def calculate_cpu_batch_size(self, cpu_memory):
        return max(1, cpu_memory // 2**30)

    def process_data(self, batch_size, device):
        self.world.results.add("plan", {"batch_size": batch_size, "device": device})


def main():
    OptimizedTask().run()
